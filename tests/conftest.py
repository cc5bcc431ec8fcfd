"""Shared test settings: small, single-threaded torch so the suite is quick and repeatable on 2 cores."""

import torch

torch.set_num_threads(1)
