"""Models-from-code entry point: MLflow copies this file into the logged model and runs it on
`mlflow.pyfunc.load_model`. It defines nothing itself, so the model holds no pickled object."""

import mlflow.models

from assynch.tracking.pyfunc import StreamingOffsetModel

mlflow.models.set_model(StreamingOffsetModel())
