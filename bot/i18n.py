"""Reply strings in English and Brazilian Portuguese, picked from Telegram's `language_code`."""

from __future__ import annotations

import string
from datetime import datetime, timedelta
from typing import Any

from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal, format_percent

DEFAULT_LANGUAGE = "en"
LOCALES = {"en": "en", "pt-BR": "pt_BR"}  # our languages -> CLDR locales

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "start": (
            "Hi {name}! Send me a photo of a cat or a dog and I will tell you its breed.\n"
            "Albums and images sent as files work too. /help for more.\n"
            "Out of the box I know ImageNet's 123 cat and dog classes (118 dogs, 5 cats); "
            "an admin can teach me others."
        ),
        "help": (
            "Send a photo (or an image file, or an album) of a cat or a dog.\n"
            "I answer with the breed, my confidence, the next two guesses and a chart.\n"
            "Press ✅ or ❌ under an answer to teach me.\n"
            "The built-in model (v0) knows ImageNet's 123 cat and dog classes; breeds outside "
            "them need a retrained model, which an admin can make.\n\n"
            "/breeds – the breeds I know\n/help – this message"
        ),
        "help_admin": (
            "\n\nAdmin (/retrain teaches me breeds beyond ImageNet's 123):\n"
            "/retrain (with a .zip, or as a reply to one) [steps=500 lr=0.01 flip=1 "
            "min_acc=0.85 force=1] – train on these photos only\n"
            "/retrain merge (with a .zip; merge=1 says the same) – add its photos and new breeds "
            "to the ones the active model learned\n"
            "/retrain feedback – add the ✅/❌ corrections to them\n"
            "/models, /promote N, /rollback, /stats\n"
            "/export [N] – the model as a .tflite file, with its labels and how to run it"
        ),
        "hint": "I look at photos of cats and dogs: send me one. /help tells you more.",
        "unknown_command": "I do not know {command}. /help lists what I can do.",
        "promote_usage": (
            "Which version? Write its number, for example /promote 3 (/models lists them)."
        ),
        "export_usage": "Which version? /export for the active one, or /export 3 (/models).",
        "export_sent": (
            "Version {version}: the model, its labels and README.txt (input, outputs, how to "
            "run it with ai-edge-litert)."
        ),
        "export_too_big": (
            "{name} is {size:.1f} MB, over the 50 MB a bot may send. Get it with the CLI: "
            "breedbot export --graph <version {version} folder> --onnx"
        ),
        "cmd_start": "Start",
        "cmd_help": "How to use the bot",
        "cmd_breeds": "Breeds the model knows",
        "working": "🔎 Looking…",
        "too_big": (
            "This file is {size:.1f} MB; Telegram lets bots download at most 20 MB. "
            "Send a smaller one."
        ),
        "not_image": "That file is not an image I can read (JPEG, PNG, WebP, HEIC, AVIF or GIF).",
        "busy": "I have too many photos to look at right now. Please send yours again in a minute.",
        "rate_limited": (
            "Easy there! You can send {count} messages every {seconds} s. Try again soon."
        ),
        "error": "Sorry, something went wrong. Please try again.",
        "job_failed": "Sorry, I could not do that: {reason}",
        "result": "{name} — {pct}",
        "not_sure": "🤔 Not sure. My best guess: {name} — {pct}",
        "next_guesses": "Next guesses: {guesses}",
        "model_version": "Model v{version}",
        "no_pet": "I see no cat or dog here. Looks like: {label} ({pct})",
        "bad_image": "I could not read this image: {reason}",
        "album": "Album of {n} photos:",
        "album_item": "{i}. {text}",
        "right": "✅ right",
        "wrong": "❌ wrong",
        "other": "✏️ another breed (type it)",
        "skip": "🚫 skip this photo",
        "type_breed": "Type the breed's name as your next message.",
        "zip_reply_retrain": (
            "Got {name}. To train a new model on it, reply /retrain to it (↩ reply, then send "
            "/retrain; /help lists the options)."
        ),
        "zip_not_admin": "Only admins can retrain me with a zip of photos; send photos one by one.",
        "which": "Which breed is it? Tap one, or type its name.",
        "feedback_done": "This photo has its answer already. Thanks!",
        "breed_unknown": (
            "I do not know a breed called “{typed}”. Type it again (/breeds lists the ones I "
            "know), or tap a button above."
        ),
        "thanks": "Thanks! Saved as {name}.",
        "thanks_other": "Thanks! I will not use this photo as a breed example.",
        "feedback_gone": "This answer is too old for feedback.",
        "not_admin": "Sorry, only admins can do that.",
        "retrain_usage": "Send /retrain with a .zip attached, or reply to a .zip with /retrain.",
        "retrain_merge_usage": (
            "/retrain merge adds photos to what the active model learned: attach the .zip with "
            "the new photos (a folder per breed), or reply to it with /retrain merge."
        ),
        "retrain_bad_options": "I could not read these options:\n{problems}",
        "retrain_queued": "⏳ Retrain queued…",
        "progress_starting": "⚙️ Starting the training process (this takes a few seconds)…",
        "progress_bottlenecks": "🧮 Reading the photos {done}/{total}",
        "progress_training": "🏋️ Training step {done}/{total}",
        "progress_final": "🏁 Training the final model, step {done}/{total}",
        "progress_candidate": "🔎 Choosing a backbone: trying {i} of {n}, {backbone}",
        "progress_backbone": "🧠 Backbone {backbone}",
        "progress_left": "about {time} left",
        "progress_comparing": "⚖️ Comparing it with the active model…",
        "progress_saving": "💾 Saving the model…",
        "validation": "validation accuracy {pct}",
        "retrain_done": "✅ Model v{version} trained: {pct} right on {n} test photos.",
        "retrain_done_cv": (
            "✅ Model v{version} trained on all {n} photos: {k}-fold cross-validated accuracy "
            "{pct} ± {spread}."
        ),
        "backbone_auto": "Backbone {chosen}, chosen by cross-validation: {scores}.",
        "dataset_sources": "Trained on {n} photos: {parts}.",
        "source_kept": "{n} kept from version {version}",
        "source_upload": "{n} from your upload",
        "source_feedback": "{n} from corrections",
        "new_class": "1 new class: {names}",
        "new_classes": "{n} new classes: {names}",
        "retrain_kept": "⚠️ Model v{version} trained but not live: {pct} right on {n} test photos.",
        "retrain_kept_cv": (
            "⚠️ Model v{version} trained on all {n} photos but not live: {k}-fold "
            "cross-validated accuracy {pct} ± {spread}."
        ),
        "models_item_cv": "{mark} v{version} — cross-validated accuracy {pct}, {created}",
        "retrain_live": "It is live now.",
        "retrain_not_live": "It did not go live: {reason}",
        "retrain_failed": "❌ Retrain failed: {reason}",
        "worst_classes": "Weakest breeds:",
        "worst_class": "• {name}: {right} of {n} right ({pct})",
        "confusion_matrix": "v{version}: confusion matrix (rows: true breed, columns: answer)",
        "confusion_title": "Model v{version} · test accuracy {pct} on {n} photos",
        "confusion_title_cv": "Model v{version} · cross-validated accuracy {pct} on {n} photos",
        "confusion_axes": "Rows: the true breed · columns: the answer (numbered as the rows)",
        # Doubled braces: t() leaves the worker a template it fills per photo.
        "mistake_caption": "is {{label}}, answered {{predicted}} ({{p:.0%}})",
        "mistakes_sheet": "v{version}: photos answered wrongly in cross-validation",
        "models_header": "Model versions (▶ = active):",
        "models_item": "{mark} v{version} — test accuracy {pct}, {created}",
        "models_host": "    {host}: {engine}, since {since}",
        "models_host_failing": "{line}\n    ⚠ cannot serve the active version: {why}",
        "built_in": "built in",
        "promoted": "Model v{version} is active now.",
        "stats": "Jobs today: {jobs}\nAverage latency: {latency} ms\nActive model: v{version}",
        "breeds": "I know {n} breeds (model v{version}):\n{names}",
        "error_codes.empty": "the file is empty",
        "error_codes.not_an_image": "it is not an image",
        "error_codes.unsupported_format": "this image format is not supported",
        "error_codes.truncated": "the file is cut off (truncated)",
        "error_codes.too_large": "the picture is too large",
        "error_codes.too_small": "the picture is too small",
        "error_codes.expired": "the photo waited too long; send it again",
        "chart_title": "Top {n} guesses · model v{version}",
        "chart_axis": "probability",
        "outside_cat": "A cat, but not one of the {n} breeds I know.",
        "outside_dog": "A dog, but not one of the {n} breeds I know.",
        "outside_cat_breed": (
            "A cat, but not one of the {n} breeds I know. It looks like: {name} ({pct})"
        ),
        "outside_dog_breed": (
            "A dog, but not one of the {n} breeds I know. It looks like: {name} ({pct})"
        ),
        "retrain_knows": (
            "This version knows {n} breeds. A photo of another breed is answered with its "
            "species (cat or dog), “not one of my {n} breeds”, and ImageNet's breed when it is "
            "one of ImageNet's 123 cat and dog classes."
        ),
        "retrain_open_set": (
            "Held-out check: {claimed} of photos of breeds left out of training were still "
            "answered as one of these; {refused} of right answers become “not one of my "
            "breeds”. /retrain open_set=0 answers every photo of their species with one of "
            "these breeds instead."
        ),
        "retrain_calibration": "Confidence calibrated on the cross-validated answers: "
        "calibration error {before} → {after}.",
        "text_cut": "✂️ … and {n} more characters (Telegram's limit is 4,096).",
        "feedback_not_yours": "Only the person who sent this photo can answer for it.",
    },
    "pt-BR": {
        "start": (
            "Oi, {name}! Mande a foto de um gato ou de um cachorro e eu digo a raça.\n"
            "Álbuns e imagens enviadas como arquivo também valem. /help para mais.\n"
            "De fábrica conheço as 123 classes de gatos e cães do ImageNet (118 cães, 5 gatos); "
            "um administrador pode me ensinar outras."
        ),
        "help": (
            "Mande uma foto (ou um arquivo de imagem, ou um álbum) de um gato ou cachorro.\n"
            "Respondo com a raça, minha confiança, os dois palpites seguintes e um gráfico.\n"
            "Toque em ✅ ou ❌ embaixo da resposta para me ensinar.\n"
            "O modelo de fábrica (v0) conhece as 123 classes de gatos e cães do ImageNet; outras "
            "raças pedem um modelo retreinado, que um administrador pode fazer.\n\n"
            "/breeds – as raças que conheço\n/help – esta mensagem"
        ),
        "help_admin": (
            "\n\nAdmin (o /retrain me ensina raças além das 123 do ImageNet):\n"
            "/retrain (com um .zip, ou respondendo a um) [steps=500 lr=0.01 flip=1 "
            "min_acc=0.85 force=1] – treinar só com essas fotos\n"
            "/retrain merge (com um .zip; merge=1 diz o mesmo) – juntar as fotos e raças novas "
            "às que o modelo ativo aprendeu\n"
            "/retrain feedback – juntar a elas as correções ✅/❌\n"
            "/models, /promote N, /rollback, /stats\n"
            "/export [N] – o modelo como arquivo .tflite, com os rótulos e como rodá-lo"
        ),
        "hint": "Eu olho fotos de gatos e cachorros: mande uma. /help explica mais.",
        "unknown_command": "Não conheço {command}. /help lista o que sei fazer.",
        "promote_usage": (
            "Qual versão? Escreva o número, por exemplo /promote 3 (/models lista as versões)."
        ),
        "export_usage": "Qual versão? /export para a ativa, ou /export 3 (/models).",
        "export_sent": (
            "Versão {version}: o modelo, seus rótulos e README.txt (entrada, saídas, como "
            "rodá-lo com ai-edge-litert)."
        ),
        "export_too_big": (
            "{name} tem {size:.1f} MB, acima dos 50 MB que um bot pode enviar. Obtenha-o pela "
            "linha de comando: breedbot export --graph <pasta da versão {version}> --onnx"
        ),
        "cmd_start": "Começar",
        "cmd_help": "Como usar o bot",
        "cmd_breeds": "Raças que o modelo conhece",
        "working": "🔎 Analisando…",
        "too_big": (
            "Este arquivo tem {size:.1f} MB; o Telegram só deixa bots baixarem até 20 MB. "
            "Mande um menor."
        ),
        "not_image": (
            "Esse arquivo não é uma imagem que eu consiga ler (JPEG, PNG, WebP, HEIC, AVIF ou GIF)."
        ),
        "rate_limited": (
            "Calma! Você pode mandar {count} mensagens a cada {seconds} s. Tente daqui a pouco."
        ),
        "busy": (
            "Estou com fotos demais para analisar agora. Mande a sua de novo daqui a um minuto."
        ),
        "error": "Desculpe, algo deu errado. Tente de novo.",
        "job_failed": "Desculpe, não consegui fazer isso: {reason}",
        "result": "{name} — {pct}",
        "not_sure": "🤔 Não tenho certeza. Meu melhor palpite: {name} — {pct}",
        "next_guesses": "Próximos palpites: {guesses}",
        "model_version": "Modelo v{version}",
        "no_pet": "Não vejo gato nem cachorro aqui. Parece: {label} ({pct})",
        "bad_image": "Não consegui ler esta imagem: {reason}",
        "album": "Álbum com {n} fotos:",
        "album_item": "{i}. {text}",
        "right": "✅ certo",
        "wrong": "❌ errado",
        "other": "✏️ outra raça (escreva)",
        "skip": "🚫 pular esta foto",
        "type_breed": "Escreva o nome da raça na próxima mensagem.",
        "zip_reply_retrain": (
            "Recebi {name}. Para treinar um modelo novo com ele, responda /retrain a ele "
            "(↩ responder e mande /retrain; /help lista as opções)."
        ),
        "zip_not_admin": (
            "Só administradores podem me retreinar com um zip de fotos; mande as fotos uma a uma."
        ),
        "which": "Qual é a raça? Toque numa, ou escreva o nome.",
        "feedback_done": "Esta foto já tem resposta. Obrigado!",
        "breed_unknown": (
            "Não conheço uma raça chamada “{typed}”. Escreva de novo (/breeds lista as que "
            "conheço), ou toque num botão acima."
        ),
        "thanks": "Obrigado! Salvo como {name}.",
        "thanks_other": "Obrigado! Não vou usar esta foto como exemplo de raça.",
        "feedback_gone": "Esta resposta é antiga demais para receber correção.",
        "not_admin": "Desculpe, só administradores podem fazer isso.",
        "retrain_usage": "Mande /retrain com um .zip anexado, ou responda a um .zip com /retrain.",
        "retrain_merge_usage": (
            "O /retrain merge junta fotos às que o modelo ativo aprendeu: anexe o .zip com as "
            "fotos novas (uma pasta por raça), ou responda a ele com /retrain merge."
        ),
        "retrain_bad_options": "Não entendi estas opções:\n{problems}",
        "retrain_queued": "⏳ Retreino na fila…",
        "progress_starting": "⚙️ Iniciando o processo de treino (leva alguns segundos)…",
        "progress_bottlenecks": "🧮 Lendo as fotos {done}/{total}",
        "progress_training": "🏋️ Passo de treino {done}/{total}",
        "progress_final": "🏁 Treinando o modelo final, passo {done}/{total}",
        "progress_candidate": "🔎 Escolhendo um backbone: testando {i} de {n}, {backbone}",
        "progress_backbone": "🧠 Backbone {backbone}",
        "progress_left": "faltam cerca de {time}",
        "progress_comparing": "⚖️ Comparando com o modelo ativo…",
        "progress_saving": "💾 Salvando o modelo…",
        "validation": "acurácia de validação {pct}",
        "retrain_done": "✅ Modelo v{version} treinado: {pct} de acerto em {n} fotos de teste.",
        "retrain_done_cv": (
            "✅ Modelo v{version} treinado com todas as {n} fotos: acurácia por validação "
            "cruzada ({k} partes) {pct} ± {spread}."
        ),
        "backbone_auto": "Backbone {chosen}, escolhido por validação cruzada: {scores}.",
        "dataset_sources": "Treinado com {n} fotos: {parts}.",
        "source_kept": "{n} guardadas da versão {version}",
        "source_upload": "{n} do seu envio",
        "source_feedback": "{n} das correções",
        "new_class": "1 classe nova: {names}",
        "new_classes": "{n} classes novas: {names}",
        "retrain_kept": (
            "⚠️ Modelo v{version} treinado, mas não entrou no ar: {pct} de acerto em {n} fotos "
            "de teste."
        ),
        "retrain_kept_cv": (
            "⚠️ Modelo v{version} treinado com todas as {n} fotos, mas não entrou no ar: acurácia "
            "por validação cruzada ({k} partes) {pct} ± {spread}."
        ),
        "models_item_cv": "{mark} v{version} — acurácia por validação cruzada {pct}, {created}",
        "retrain_live": "Já está no ar.",
        "retrain_not_live": "Não entrou no ar: {reason}",
        "retrain_failed": "❌ O retreino falhou: {reason}",
        "worst_classes": "Raças mais fracas:",
        "worst_class": "• {name}: {right} de {n} certas ({pct})",
        "confusion_matrix": "v{version}: matriz de confusão (linhas: raça real, colunas: resposta)",
        "confusion_title": "Modelo v{version} · acurácia de teste {pct} em {n} fotos",
        "confusion_title_cv": (
            "Modelo v{version} · acurácia por validação cruzada {pct} em {n} fotos"
        ),
        "confusion_axes": "Linhas: a raça real · colunas: a resposta (numeradas como as linhas)",
        "mistake_caption": "é {{label}}, respondi {{predicted}} ({{p:.0%}})",
        "mistakes_sheet": "v{version}: fotos que errei na validação cruzada",
        "models_header": "Versões do modelo (▶ = ativa):",
        "models_item": "{mark} v{version} — acurácia de teste {pct}, {created}",
        "models_host": "    {host}: {engine}, desde {since}",
        "models_host_failing": "{line}\n    ⚠ não consegue servir a versão ativa: {why}",
        "built_in": "embutido",
        "promoted": "O modelo v{version} está ativo agora.",
        "stats": "Tarefas hoje: {jobs}\nLatência média: {latency} ms\nModelo ativo: v{version}",
        "breeds": "Conheço {n} raças (modelo v{version}):\n{names}",
        "error_codes.empty": "o arquivo está vazio",
        "error_codes.not_an_image": "não é uma imagem",
        "error_codes.unsupported_format": "este formato de imagem não é suportado",
        "error_codes.truncated": "o arquivo está cortado (incompleto)",
        "error_codes.too_large": "a imagem é grande demais",
        "error_codes.too_small": "a imagem é pequena demais",
        "error_codes.expired": "a foto esperou demais; mande de novo",
        "chart_title": "{n} palpites principais · modelo v{version}",
        "chart_axis": "probabilidade",
        "outside_cat": "Um gato, mas de nenhuma das {n} raças que conheço.",
        "outside_dog": "Um cachorro, mas de nenhuma das {n} raças que conheço.",
        "outside_cat_breed": (
            "Um gato, mas de nenhuma das {n} raças que conheço. Parece: {name} ({pct})"
        ),
        "outside_dog_breed": (
            "Um cachorro, mas de nenhuma das {n} raças que conheço. Parece: {name} ({pct})"
        ),
        "retrain_knows": (
            "Esta versão conhece {n} raças. A foto de outra raça recebe a espécie (gato ou "
            "cachorro), “nenhuma das minhas {n} raças” e a raça do ImageNet quando ela é uma das "
            "123 classes de gatos e cães do ImageNet."
        ),
        "retrain_open_set": (
            "Teste com raças deixadas de fora: {claimed} das fotos delas ainda receberam uma "
            "destas raças; {refused} das respostas certas viram “nenhuma das minhas raças”. "
            "/retrain open_set=0 responde toda foto da espécie delas com uma destas raças."
        ),
        "retrain_calibration": "Confiança calibrada nas respostas da validação cruzada: "
        "erro de calibração {before} → {after}.",
        "text_cut": "✂️ … e mais {n} caracteres (o limite do Telegram é 4.096).",
        "feedback_not_yours": "Só quem enviou esta foto pode responder sobre ela.",
    },
}

# Problems the worker reports (dataset, accuracy gate, registry, storage, download) by code, with
# the values it sends; English is the worker's own text, so only other languages are listed here.
PROBLEMS: dict[str, dict[str, str]] = {
    # English problems are the worker's own messages, except where the bot knows better: a
    # cross-validated accuracy is not a test accuracy.
    "en": {
        "no_such_version": "there is no model version {version} (/models lists them)",
        "below_minimum_cv": (
            "the cross-validated accuracy {accuracy:.1%} is below the minimum {minimum:.1%}"
        ),
    },
    "pt-BR": {
        "below_minimum_cv": (
            "a acurácia por validação cruzada {accuracy:.1%} está abaixo do mínimo {minimum:.1%}"
        ),
        "zip_empty": (
            "O arquivo zip está vazio: coloque nele as pastas das classes ou o labels.csv."
        ),
        "zip_too_many_files": (
            "Zip recusado: {files} arquivos e pastas, o limite é {limit}. Envie menos imagens."
        ),
        "zip_too_large": (
            "Zip recusado: descompactado, ele ocupa {total} bytes; o limite é {limit}."
        ),
        "zip_encrypted": "O arquivo zip está protegido por senha ({name!r}); envie-o sem senha.",
        "zip_bomb": (
            "Zip recusado: {name!r} se expande de {packed} para {size} bytes, mais de {ratio}x "
            "(uma bomba zip?)."
        ),
        "zip_lying_header": "Zip recusado: {name!r} descompacta mais do que o cabeçalho diz.",
        "zip_unreadable": "Não consigo ler o arquivo zip: {detail}",
        "csv_column": "{csv} precisa de uma coluna chamada {wanted}; o cabeçalho é {header}.",
        "csv_no_image_dir": "A pasta de imagens {folder} do {csv} não existe.",
        "csv_not_utf8": "{csv} não é texto UTF-8: {detail}",
        "csv_files_missing": (
            "Nenhum dos {rows} arquivos listados em {csv} foi encontrado em {folder} "
            "(primeiro: {first}). Coloque as imagens ao lado dele ou em train/."
        ),
        "class_control_characters": (
            "O nome de classe {label!r} contém caracteres de controle; renomeie-o."
        ),
        "feedback_quota_chat": (
            "este chat já enviou {limit} correções, o máximo que guardo por chat; obrigado"
        ),
        "feedback_quota_total": "já guardo o máximo de {limit} correções; obrigado",
        "expired": "a foto não está mais guardada; mande de novo",
        "class_name_path": (
            "O nome de classe {label!r} não pode nomear uma pasta (uma barra, ou um ponto no "
            "início); renomeie-o."
        ),
        "class_name_too_long": (
            "O nome de classe {label!r} tem {length} caracteres; o limite é {limit}. Encurte-o."
        ),
        "class_name_bidi": (
            "O nome de classe {label!r} contém controles de direção do texto, que podem "
            "disfarçá-lo; renomeie-o."
        ),
        "class_names_clash": (
            "As classes {first!r} e {second!r} apareceriam ambas como {shown!r}; renomeie ou "
            "junte as duas."
        ),
        "not_found": "{source} não existe.",
        "not_folder_or_zip": "{name} não é uma pasta nem um arquivo zip.",
        "no_images": "Nenhuma imagem utilizável em {folder}.",
        "no_usable_images": (
            "Nenhuma imagem utilizável em {folder} ({skipped} arquivos ignorados, por exemplo "
            "{example}: {reason})."
        ),
        "one_class": (
            "São necessárias pelo menos 2 classes, encontrei {found}: {classes}. Coloque as "
            "imagens de cada classe numa pasta própria."
        ),
        "too_few_images": "Cada classe precisa de pelo menos {min} imagens utilizáveis: {short}.",
        "no_known_classes": (
            "Nenhuma das classes em {folder} é conhecida pelo modelo (ele conhece: {known}...)."
        ),
        "no_training_images": (
            "Não sobrou imagem de treino legível para a(s) classe(s) {classes}; adicione mais "
            "imagens ou remova a classe."
        ),
        "below_required_accuracy": (
            "a acurácia de teste {accuracy:.1%} está abaixo da exigida, {required:.1%}; nenhum "
            "modelo foi gravado"
        ),
        "below_minimum": "a acurácia de teste {accuracy:.1%} está abaixo do mínimo {minimum:.1%}",
        "below_active": (
            "a acurácia de teste {accuracy:.1%} está abaixo dos {active_accuracy:.1%} da versão "
            "ativa {version} no mesmo conjunto de teste"
        ),
        "no_such_version": "não existe a versão {version} do modelo (/models lista as versões)",
        "nothing_to_roll_back_to": "não há versão ativa anterior para onde voltar",
        "malformed_record": "o registro da versão {version} do modelo no Redis está malformado",
        "storage": (
            "não foi possível gravar a nova versão na pasta de modelos ({why}); o modelo ativo "
            "não mudou"
        ),
        "merge_nothing_kept": (
            "a versão ativa {version} não guardou um conjunto de dados para receber as fotos (é "
            "o modelo embutido ou foi treinada antes de os conjuntos serem guardados); mande "
            "/retrain com o zip completo"
        ),
        "bad_record": "o registro da versão não pode ser usado ({why}); a versão ativa não mudou",
        "store_missing": "{key} não está no armazenamento de blobs; a versão ativa não mudou",
        "store_damaged": (
            "{key} está danificado no armazenamento de blobs (o conteúdo não confere com o "
            "hash); a versão ativa não mudou"
        ),
        "store_unreachable": (
            "o armazenamento de blobs não respondeu para {key}: {why}; a versão ativa não mudou"
        ),
        "too_large": "o arquivo passa do limite de {limit_mb} MB",
        "feedback_one_class": (
            "As correções até agora cobrem só {found} raça(s): {classes}. O retreino precisa de "
            "pelo menos 2: toque em ✅ ou ❌ embaixo de mais respostas."
        ),
        "feedback_empty": (
            "Ainda não há correções: toque em ✅ ou ❌ embaixo das respostas às fotos primeiro."
        ),
        "bad_payload": "o pedido chegou sem a imagem ou o zip em formato legível",
        "option_unknown": "{word}: essa opção não existe (as opções são {known})",
        "option_int": "{option}={raw}: use um número inteiro de {low} a {high}",
        "option_float": "{option}={raw}: use um número de {low} a {high}",
        "option_flag": "{option}={raw}: use 1 (ligado) ou 0 (desligado)",
        "option_backbone": (
            "{raw}: um retreino pela fila aceita {known}; um handle do TF Hub é só para a "
            "linha de comando"
        ),
        "option_split": (
            "as partes de teste e de validação somam {total}%; juntas, devem ficar abaixo de 100%"
        ),
    },
}


def pick_language(language_code: str | None) -> str:
    """Our language for a Telegram `language_code` ("pt", "pt-br", "pt-PT" -> pt-BR; else en)."""
    if language_code and language_code.lower().startswith("pt"):
        return "pt-BR"
    return DEFAULT_LANGUAGE


class _LocaleFormatter(string.Formatter):
    """str.format with numbers written the locale's way (CLDR, through Babel): "25,3" and
    "93,1%" in pt-BR, "25.3" and "93.1%" in English. Strings pass through unchanged."""

    def __init__(self, language: str) -> None:
        self.locale = LOCALES.get(language, LOCALES[DEFAULT_LANGUAGE])

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return super().format_field(value, format_spec)
        if format_spec.endswith("%"):  # "{accuracy:.1%}"
            digits = int(format_spec.lstrip(".")[:-1] or 0)
            pattern = "#,##0" + ("." + "0" * digits if digits else "") + "%"
            return format_percent(value, pattern, locale=self.locale)
        if format_spec.endswith("f"):  # "{size:.1f}"
            digits = int(format_spec.lstrip(".")[:-1] or 0)
            pattern = "0" + ("." + "0" * digits if digits else "")
            return format_decimal(value, pattern, locale=self.locale)
        return format_decimal(value, locale=self.locale, group_separator=False)


def t(language: str, key: str, **values: object) -> str:
    """The string `key` in `language` (English when missing), formatted with `values`."""
    table = STRINGS.get(language, STRINGS[DEFAULT_LANGUAGE])
    text = table.get(key) or STRINGS[DEFAULT_LANGUAGE][key]
    return _LocaleFormatter(language).format(text, **values)


def percent(probability: float, language: str, digits: int = 0) -> str:
    """A probability as a percentage, the locale's way ("93%"; "98,7%" with one digit in pt)."""
    return _LocaleFormatter(language).format(f"{{0:.{digits}%}}", probability)


def sentence(text: str) -> str:
    """`text` ending as a sentence does: a full stop unless it has its own end already."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…")) else f"{text}."


def duration(seconds: float, language: str) -> str:
    """A span of time, rounded the locale's way ("20 seconds", "2 minutos")."""
    span = timedelta(seconds=max(seconds, 1))
    return format_timedelta(span, threshold=1.5, locale=LOCALES.get(language, "en"))


def number(value: float, language: str) -> str:
    """A number the locale's way ("25,3" in pt-BR)."""
    return _LocaleFormatter(language).format("{0}", value)


def moment(when: datetime, language: str) -> str:
    """A date and time, short, the locale's way ("01/12/2026 20:55" in pt-BR)."""
    return format_datetime(when, "short", locale=LOCALES.get(language, "en"))


def error_reason(language: str, code: str, message: str | None) -> str:
    """Why an image was rejected, translated from its `ImageError` code when we know the code."""
    key = f"error_codes.{code}"
    return t(language, key) if key in STRINGS[DEFAULT_LANGUAGE] else (message or code)


def problem_text(language: str, code: str | None, params: dict[str, object], english: str) -> str:
    """A problem the worker reported, worded in `language`; its English text when we cannot."""
    template = PROBLEMS.get(language, {}).get(code or "")
    if template is None:
        return english
    try:
        return _LocaleFormatter(language).format(template, **params)
    except (KeyError, IndexError, ValueError):  # a worker of another release sent other values
        return english
