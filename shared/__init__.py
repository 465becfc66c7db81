"""tuneloop: continuous fine-tuning of chat models on Azure Machine Learning.

The application core. Nothing here imports ``azure.functions``; the triggers in
``functions/`` translate bindings into calls of this package.
"""

__all__: list[str] = []
