# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The fashion recipe (`training/configs/fashion.yaml`) as the studies train and probe it: its config, its locked image
tower with the evaluation's cache of that tower's hidden states, the validation rows and the zero-shot probe that
runs on them during training.
"""

from __future__ import annotations

import json
import os

import numpy as np

from benchmarks.records import REPO

FASHION_CONFIG = os.path.join(REPO, "training", "configs", "fashion.yaml")


def locked_tower(config: dict):
    """A config's pretrained image tower (eval mode) and the block after which its hidden states are cached: the
    locked blocks come before it (`training.unlocked_image_layers` train after it)."""
    from transformers import AutoModel

    from eclip.training.pretrain import resolve_vision_model
    from modeling_eclip import vision_layers

    tower = AutoModel.from_pretrained(resolve_vision_model(config["model"].get("vision_model"))).eval()
    layer = len(vision_layers(tower)) - int(config["training"].get("unlocked_image_layers", 0))
    return tower, layer


def locked_tower_features(config: dict, image_processor):
    """
    The config's locked image tower, the block after which its hidden states are cached, and the evaluation's
    cache of those hidden states (one per image set, shared by every model and study that reads this tower).
    """
    from eclip.training.evaluation.tower_features import TowerFeatures

    tower, layer = locked_tower(config)
    features = TowerFeatures(tower, image_processor, layer, folder=os.path.join(REPO, ".eclip-cache", "evaluation"),
                             show_progress=False)
    return tower, layer, features


def validation_rows(data_dir: str, limit: int | None = None) -> list[dict]:
    from eclip.training.fashion import load_split_rows

    return load_split_rows(data_dir, ["validation"], limit, 0)["validation"]


class ValidationZeroShot:
    """
    Zero-shot articleType (accuracy, weighted F1) and text-to-image R@1 on the validation split. With a locked
    tower the rows' tower hidden states are computed once (at the model's locked block) and each measurement runs
    only the trainable rest: a probe costs seconds, not a pass of the tower.
    """

    def __init__(self, tower, processor, rows: list[dict], layer: int | None, templates=None):
        import torch

        from eclip.training.evaluation.data import DEFAULT_TEMPLATES
        from eclip.training.evaluation.embedder import load_image
        from eclip.training.fashion import LABEL_FIELD, TITLE_FIELD
        from modeling_eclip import vision_tower_head

        self.rows, self.layer = rows, layer
        self.templates = list(templates or DEFAULT_TEMPLATES)
        self.class_names = sorted({r[LABEL_FIELD] for r in rows})
        self.labels = np.array([self.class_names.index(r[LABEL_FIELD]) for r in rows])
        self.titles = [r[TITLE_FIELD] for r in rows]
        self.processor = processor
        self.features = []
        with torch.inference_mode():
            for start in range(0, len(rows), 64):
                pixels = processor(images=[load_image(r["path"]) for r in rows[start : start + 64]],
                                   return_tensors="pt")["pixel_values"]
                self.features.append(pixels if layer is None else vision_tower_head(tower, pixels, layer))
        self.history: list[dict] = []

    def _texts(self, model, texts):
        import torch

        out = []
        for start in range(0, len(texts), 256):
            inputs = self.processor(text=texts[start : start + 256], return_tensors="pt", padding=True, truncation=True)
            inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            out.append(torch.nn.functional.normalize(model.get_text_features(**inputs).pooler_output, dim=-1))
        return torch.cat(out).float().numpy()

    def measure(self, model, step: int) -> dict:
        import torch
        from sklearn.metrics import f1_score

        from eclip.training.evaluation.embedder import image_text_scores, normalize

        was_training = model.training
        model.eval()
        with torch.inference_mode():
            images = {"image_embeds": [], "instance_embeds": []}
            for chunk in self.features:
                inputs = ({"pixel_values": chunk} if self.layer is None
                          else {"image_hidden_states": chunk, "image_hidden_states_layer": self.layer})
                if not model.config.use_instance_decoder:
                    images["image_embeds"].append(model.get_image_features(**inputs).pooler_output.float())
                else:
                    instance = model.get_instance_features(**inputs)
                    images["image_embeds"].append(instance.image_embeds.float())
                    images["instance_embeds"].append(instance.instance_embeds.float())
            images = {k: torch.cat(v).numpy() if v else None for k, v in images.items()}
            images["image_embeds"] = normalize(images["image_embeds"])
            prompts = [t.format(c) for c in self.class_names for t in self.templates]
            classes = self._texts(model, prompts).reshape(len(self.class_names), len(self.templates), -1)
            classes = normalize(classes.mean(axis=1))
            titles = self._texts(model, self.titles)
        model.train(was_training)
        predicted = image_text_scores(images, classes).argmax(axis=1)
        ranks = image_text_scores(images, titles).T  # titles x images
        same = np.array([[a == b for b in self.titles] for a in self.titles])
        best = ranks.argmax(axis=1)
        entry = {
            "step": step,
            "zero_shot_accuracy": float(np.mean(predicted == self.labels)),
            "zero_shot_weighted_f1": float(f1_score(self.labels, predicted, average="weighted")),
            "t2i_r1": float(np.mean(same[np.arange(len(best)), best])),
        }
        self.history.append(entry)
        return entry

    def callback(self, every: int):
        from transformers import TrainerCallback

        probe = self

        class Probe(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % every == 0 or state.global_step == state.max_steps:
                    print(f"[probe] {json.dumps(probe.measure(model, state.global_step))}", flush=True)

        return Probe()


__all__ = ["FASHION_CONFIG", "ValidationZeroShot", "locked_tower", "locked_tower_features", "validation_rows"]
