"""The head-only refit of the selection head: the convex fit, its targets, and the refit of a real (tiny) model."""

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_processor

from modeling_eclip import EclipModel
from training.selection_refit import fit_selection_head, member_targets, refit_selection_head, selection_objective

torch.set_num_threads(1)


def test_the_fit_recovers_a_planted_head():
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(600, 6, 12, generator=generator)
    planted = torch.randn(1, 12, generator=generator) * 3
    chosen = (states @ planted.T).squeeze(-1).argmax(-1)
    targets = torch.nn.functional.one_hot(chosen, 6).float()
    weight = fit_selection_head(states, targets, weight_decay=1e-4)
    found = (states @ weight.T).squeeze(-1).argmax(-1)
    assert (found == chosen).float().mean() > 0.95
    assert selection_objective(states, targets, weight, 1e-4) < selection_objective(states, targets, planted * 0, 1e-4)
    # Starting from the optimum, the fit stays there.
    again = fit_selection_head(states, targets, initial=weight, weight_decay=1e-4)
    assert selection_objective(states, targets, again, 1e-4) <= selection_objective(states, targets, weight, 1e-4) + 1e-6


def test_the_fit_refuses_mismatched_shapes_and_targets_that_are_not_distributions():
    with pytest.raises(ValueError, match=r"\[N, K, H\]"):
        fit_selection_head(torch.zeros(4, 3), torch.ones(4, 3) / 3)
    with pytest.raises(ValueError, match="distribution"):
        fit_selection_head(torch.zeros(4, 3, 2), torch.ones(4, 3))


def test_targets_spread_over_the_picked_queries_and_an_image_without_one_is_an_error():
    targets = member_targets([[2], [0, 3, 0], [1, 1]], 4)
    np.testing.assert_allclose(targets.numpy(), [[0, 0, 1, 0], [0.5, 0, 0, 0.5], [0, 1, 0, 0]])
    with pytest.raises(ValueError, match="image 1 shows no product"):
        member_targets([[1], []], 4)


def _rows(data_dir, count):
    from training.fashion import read_fashion_metadata

    return [r for r in read_fashion_metadata(data_dir) if r["split"] == "train"][:count]


def test_refit_changes_only_the_head_and_lowers_its_objective(data_dir):
    torch.manual_seed(0)
    model = EclipModel(tiny_config()).eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stats = refit_selection_head(model, tiny_processor(), _rows(data_dir, 24), scenes=16, photos=16, seed=0)
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed == ["instance_decoder.selection_head.weight"]
    assert stats["images"] == 32 and stats["scenes"] == 16 and stats["photos"] == 16
    assert stats["loss_after"] < stats["loss_before"]
    assert 0.0 <= stats["top_query_share"] <= 1.0 and 0.0 <= stats["agreement_after"] <= 1.0
    # The text-conditioned scores do not depend on the head: the instances are unchanged.
    pixel_values = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        refit_instances = model.get_instance_features(pixel_values).instance_embeds
        head = model.instance_decoder.selection_head.weight.detach().clone()
        model.instance_decoder.selection_head.weight.copy_(before["instance_decoder.selection_head.weight"])
        torch.testing.assert_close(model.get_instance_features(pixel_values).instance_embeds, refit_instances)
        assert not torch.equal(head, before["instance_decoder.selection_head.weight"])


def test_refit_needs_the_decoder_and_rows_to_compose(data_dir):
    with pytest.raises(ValueError, match="instance decoder"):
        refit_selection_head(EclipModel(tiny_config(use_instance_decoder=False)), tiny_processor(),
                             _rows(data_dir, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        refit_selection_head(EclipModel(tiny_config()), tiny_processor(), _rows(data_dir, 1))
