"""Reply texts and pictures built from worker results (used by the reply task, not the bot loop)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure

from bot.i18n import DEFAULT_LANGUAGE, error_reason, percent, problem_text, t
from contract import ClassifyResult, Guess, Progress, RetrainResult


def _guesses(result: ClassifyResult) -> list[Guess]:
    return [Guess.from_dict(g) for g in result.top_k]


def headline(result: ClassifyResult, language: str, low_confidence: float) -> str:
    """One line: the breed and confidence, "not sure", "no cat or dog" or why the image failed."""
    if result.error:
        reason = error_reason(language, result.error, result.error_message)
        return t(language, "bad_image", reason=reason)
    if result.is_pet is False:  # None: the backbone has no ImageNet head to gate with
        return t(
            language,
            "no_pet",
            label=result.imagenet_label,
            pct=percent(result.imagenet_probability, language),
        )
    best = _guesses(result)[0]
    sure = best.probability >= low_confidence and not result.pet_unsure
    key = "result" if sure else "not_sure"
    return t(language, key, name=best.display_name, pct=percent(best.probability, language))


def classification_text(result: ClassifyResult, language: str, low_confidence: float) -> str:
    """The full answer to one photo: headline, the next two guesses and the model version."""
    lines = [headline(result, language, low_confidence)]
    if not result.error and result.is_pet is not False:
        following = ", ".join(
            f"{g.display_name} ({percent(g.probability, language)})" for g in _guesses(result)[1:3]
        )
        if following:
            lines.append(t(language, "next_guesses", guesses=following))
    lines.append(t(language, "model_version", version=result.model_version))
    return "\n".join(lines)


def album_text(results: Sequence[ClassifyResult], language: str, low_confidence: float) -> str:
    """One reply for an album: a numbered headline per photo, then the model version."""
    lines = [t(language, "album", n=len(results))]
    lines += [
        t(language, "album_item", i=i, text=headline(r, language, low_confidence))
        for i, r in enumerate(results, start=1)
    ]
    versions = sorted({r.model_version for r in results})
    lines.append(t(language, "model_version", version="/".join(map(str, versions))))
    return "\n".join(lines)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def top_k_chart(result: ClassifyResult) -> bytes:
    """A horizontal bar chart of the top-k probabilities, best on top, as PNG bytes."""
    guesses = _guesses(result)[::-1]
    # The object API (no pyplot): no global figure state, safe in a threads pool.
    fig = Figure(figsize=(6, 0.5 * len(guesses) + 1))
    ax = fig.add_subplot()
    probs = [g.probability for g in guesses]
    bars = ax.barh([g.display_name for g in guesses], probs, color="#4c72b0")
    bars[-1].set_color("#dd8452")
    ax.bar_label(bars, labels=[percent(p, DEFAULT_LANGUAGE) for p in probs], padding=3)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("probability")
    ax.set_title(f"Top {len(guesses)} (model v{result.model_version})")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def progress_text(progress: Progress, language: str) -> str:
    """The status line of a running retrain ("Training step 300/500 · validation accuracy 91 %")."""
    text = t(language, f"progress_{progress.stage}", done=progress.done, total=progress.total)
    if progress.validation_accuracy is not None:
        accuracy = t(language, "validation", pct=percent(progress.validation_accuracy, language))
        text = f"{text} · {accuracy}"
    return text


def retrain_text(result: RetrainResult, language: str) -> str:
    """The final status of a retrain: accuracy, weakest classes and whether it went live."""
    reason = problem_text(language, result.problem, result.params, result.reason)
    cv = result.metrics.get("cross_validation")
    if result.metrics.get("accuracy_source") == "cross_validation" and cv:
        headline = t(
            language,
            "retrain_done_cv",
            version=result.version,
            n=result.metrics.get("n_train", "?"),
            k=cv["k"],
            pct=percent(cv["accuracy"], language),
            spread=percent(cv["std"], language),
        )
    else:
        accuracy = percent(result.test_accuracy or 0, language)
        n_test = result.metrics.get("n_test", 0)
        headline = t(language, "retrain_done", version=result.version, pct=accuracy, n=n_test)
    lines = [headline]
    auto = result.metrics.get("auto")
    if auto:
        scores = ", ".join(
            f"{name} {percent(c['cv_accuracy'], language)}"
            for name, c in auto["candidates"].items()
        )
        lines.append(t(language, "backbone_auto", chosen=auto["chosen"], scores=scores))
    worst = result.metrics.get("worst_classes") or []
    if worst:
        lines.append(t(language, "worst_classes"))
        lines += [
            t(
                language,
                "worst_class",
                name=name,
                right=round(share * n),
                n=n,
                pct=percent(share, language),
            )
            for name, share, n in worst
        ]
    if result.activated:
        lines.append(t(language, "retrain_live"))
    else:
        lines.append(t(language, "retrain_not_live", reason=reason))
    return "\n".join(lines)
