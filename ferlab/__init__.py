"""ferlab: an explainability lab for facial emotion recognition on FER2013."""
from .checkpoints import CheckpointError, FERClassifier, list_models, load_model
from .data import load_fer2013
from .labels import EMOTIONS
from .models import create_model, list_architectures
from .pipeline import FaceResult, analyze
from .preprocess import to_tensor

__all__ = ["EMOTIONS", "CheckpointError", "FERClassifier", "FaceResult", "analyze", "create_model",
           "list_architectures", "list_models", "load_fer2013", "load_model", "to_tensor"]
__version__ = "0.2.0"
