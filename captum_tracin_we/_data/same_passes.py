#!/usr/bin/env python3

r"""
The same data at every checkpoint pass: each pass over the training or test
data is fingerprinted as it goes through the model, and the passes must agree.
"""

from typing import Optional

from captum_tracin_we._data.data_fingerprint import ExampleDigests
from captum_tracin_we._data.training_data import (
    TrainingData,
)
from captum_tracin_we._errors import (
    TrainingDataError,
)


class SamePasses:
    r"""
    Checks that every checkpoint pass saw the same data, and (for the training
    set) as many examples as it holds.
    """

    def __init__(
        self, training: Optional[TrainingData] = None, role: str = "training"
    ) -> None:
        self.first: Optional[str] = None
        self.training = training
        self.role = role

    def start(self) -> ExampleDigests:
        return ExampleDigests()

    def finish(self, digests: Optional[ExampleDigests]) -> None:
        if digests is None:
            return
        digest = digests.digests()[0]
        if self.first is None:
            self.first = digest
            if self.training is not None:
                self.training.check_count(digests.num_examples)
        elif digest != self.first:
            raise TrainingDataError(
                f"The {self.role} data changed between checkpoint passes (a random "
                "sampler or transform, or a dataset that changes as it is read). "
                "TracIn-WE needs the same examples in the same order at every "
                "checkpoint."
            )
