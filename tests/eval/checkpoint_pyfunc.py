"""A models-from-code pyfunc around an assynch checkpoint artifact (what the tests register).

The registry entry is real (a LoggedModel with a model_id, a registered version); the pyfunc
itself only reports the checkpoint it holds: evaluation loads the checkpoint, not the pyfunc.
"""

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class CheckpointModel(PythonModel):
    def load_context(self, context: Any) -> None:
        self.checkpoint = context.artifacts["checkpoint"]

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        return [self.checkpoint] * len(model_input)


mlflow.models.set_model(CheckpointModel())
