# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The ECLIP-vs-CLIP benchmark's validation probe: cheap measurements during training (retrieval, scene retrieval and
the instance decoder's diagnostics) that give the learning curves of benchmarks/eclip_vs_clip.py.
"""

from __future__ import annotations

import json


class ValidationProbe:
    """
    Cheap validation measurements every `every` steps (and at step 0): text-to-image retrieval among `rows`' own
    images, text-to-scene retrieval (each row's product pasted among 1-3 others), and for ECLIP the decoder
    diagnostics. Inputs are processed once; the probe runs in eval mode under `inference_mode`.
    """

    def __init__(self, processor, rows: list[dict], scenes: list[dict], every: int, max_length: int = 32):
        from modeling_eclip.metrics import load_metric
        from eclip.training.evaluation import load_image

        self.every = every
        self.rows, self.scenes = rows, scenes
        self.text_inputs = processor(text=[r["productDisplayName"] for r in rows], return_tensors="pt",
                                     padding=True, truncation=True, max_length=max_length)
        self.text_inputs = {k: v for k, v in self.text_inputs.items()
                            if k in ("input_ids", "attention_mask", "token_type_ids")}
        self.product_pixels = processor(images=[load_image(r["path"]) for r in rows],
                                        return_tensors="pt")["pixel_values"]
        self.scene_pixels = processor(images=[s["image"] for s in scenes], return_tensors="pt")["pixel_values"]
        titles = [r["productDisplayName"] for r in rows]
        self.same_title = [[j for j, t in enumerate(titles) if t == title] for title in titles]
        self.containing = [[s for s, scene in enumerate(scenes) if q in scene["members"]] for q in range(len(rows))]
        self.retrieval = load_metric("retrieval")  # recall@k as the evaluation suite computes it
        self.history: list[dict] = []

    @staticmethod
    def _images(model, pixels, batch: int = 128) -> dict:
        """`eclip.training.evaluation.image_text_scores`' input (numpy), plus the ECLIP selection logits."""
        import torch

        outs = {"instance_embeds": [], "selection_logits": [], "image_embeds": []}
        for start in range(0, pixels.shape[0], batch):
            chunk = pixels[start : start + batch]
            if model.config.use_instance_decoder:
                out = model.get_instance_features(chunk)
                outs["instance_embeds"].append(out.instance_embeds)
                outs["selection_logits"].append(out.selection_logits)
            else:
                outs["image_embeds"].append(
                    torch.nn.functional.normalize(model.get_image_features(chunk).pooler_output, dim=-1)
                )
        return {k: torch.cat(v).float().numpy() if v else None for k, v in outs.items()}

    def _recall(self, scores, relevant) -> tuple[float, float]:
        result = self.retrieval.compute(scores=scores.tolist(), relevant=relevant, k_values=(1, 10))
        return result["recall@1"], result["recall@10"]

    def measure(self, model, step: int) -> dict:
        import numpy as np
        import torch

        from eclip.training.evaluation import image_text_scores

        was_training = model.training
        model.eval()
        with torch.inference_mode():
            texts = torch.nn.functional.normalize(model.get_text_features(**self.text_inputs).pooler_output, dim=-1)
            texts = texts.float().numpy()
            products = self._images(model, self.product_pixels)
            scenes = self._images(model, self.scene_pixels)
        model.train(was_training)

        # texts x images: max_k <q_k, t> (ECLIP) or <g, t> (CLIP)
        entry = {"step": step}
        entry["retrieval_r1"], entry["retrieval_r10"] = self._recall(image_text_scores(products, texts).T,
                                                                     self.same_title)
        entry["scene_r1"], entry["scene_r10"] = self._recall(image_text_scores(scenes, texts).T, self.containing)
        instances = scenes["instance_embeds"]
        if instances is not None:
            k = instances.shape[1]
            chosen, distinct, agree = [], [], []
            for s, scene in enumerate(self.scenes):
                picks = [int(np.argmax(instances[s] @ texts[m])) for m in scene["members"]]
                chosen.append(picks[0])  # the scene's own (target) product
                distinct.append(len(set(picks)) / len(picks))
                agree.append(int(np.argmax(scenes["selection_logits"][s])) == picks[0])
            usage = np.bincount(chosen, minlength=k) / len(chosen)
            pairwise = np.einsum("skd,sld->skl", instances, instances)
            nonzero = usage[usage > 0]
            entry.update({
                "top_query_share": float(usage.max()),
                "query_usage_entropy": float(-(nonzero * np.log(nonzero)).sum() / np.log(k)),
                "distinct_query_rate": float(np.mean(distinct)),
                "selection_agreement": float(np.mean(agree)),
                "instance_similarity": float(pairwise[:, ~np.eye(k, dtype=bool)].mean()),
            })
        self.history.append(entry)
        return entry

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class _ProbeCallback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                if not probe.history:
                    probe.measure(model, 0)

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % probe.every == 0 or state.global_step == state.max_steps:
                    entry = probe.measure(model, state.global_step)
                    print(f"[probe] {json.dumps(entry)}", flush=True)

        return _ProbeCallback()


__all__ = ["ValidationProbe"]
