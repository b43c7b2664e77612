"""The stage-1 objective (eq. 20) against its explicit formula."""

from __future__ import annotations

import pytest
import torch

from reidkit.selection import stage1_objective


def test_stage1_objective_weights_each_level() -> None:
    contrastive = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)]
    alignment = [torch.tensor(10.0), torch.tensor(20.0), torch.tensor(30.0)]
    torch.testing.assert_close(stage1_objective(contrastive, alignment), torch.tensor(12.0))
    weighted = stage1_objective(contrastive, alignment, alpha=[1.0, 0.5, 0.0], beta=[0.0, 1.0, 2.0])
    torch.testing.assert_close(weighted, torch.tensor(1.0 + 1.0 + 20.0 + 60.0))
    torch.testing.assert_close(stage1_objective(contrastive), torch.tensor(6.0))
    with pytest.raises(ValueError, match="alignment"):
        stage1_objective(contrastive, alignment[:2])
    with pytest.raises(ValueError, match="alpha"):
        stage1_objective(contrastive, alpha=[1.0])
