"""The seven FER2013 emotions and the name synonyms other datasets use for them."""

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)

# Folder and ClassLabel names seen in FER datasets on the Hub and on Kaggle.
_SYNONYMS = {
    "angry": 0, "anger": 0,
    "disgust": 1, "disgusted": 1,
    "fear": 2, "fearful": 2, "scared": 2,
    "happy": 3, "happiness": 3,
    "sad": 4, "sadness": 4,
    "surprise": 5, "surprised": 5,
    "neutral": 6,
}

# FER+ vote columns: neutral, happiness, surprise, sadness, anger, disgust, fear,
# contempt, unknown, not-a-face.  The first seven map to these FER2013 labels.
FERPLUS_TO_FER = (6, 3, 5, 4, 0, 1, 2)

# The label sets a model can be trained and scored on (a card's data.labels), as tables name them.
LABEL_SETS = {"fer2013": "FER2013", "ferplus": "FER+ majority"}


def emotion_index(name_or_index) -> int:
    """Class index for an emotion given by index or by (synonym) name."""
    if isinstance(name_or_index, str):
        key = name_or_index.strip().lower()
        if key.isdigit():
            return emotion_index(int(key))
        if key not in _SYNONYMS:
            raise ValueError(f"unknown emotion {name_or_index!r}; expected one of {', '.join(EMOTIONS)}")
        return _SYNONYMS[key]
    index = int(name_or_index)
    if not 0 <= index < NUM_CLASSES:
        raise ValueError(f"emotion index {index} out of range 0..{NUM_CLASSES - 1}")
    return index


def name_to_index(name: str):
    """FER2013 index for a dataset's class name, or None when the name is not an emotion word."""
    return _SYNONYMS.get(str(name).strip().lower())
