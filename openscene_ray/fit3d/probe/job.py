"""FiT3D's evaluation: linear probes and multi-view consistency of the original, fine-tuned and
concatenated features, in this process (``runner: local``) or in one Ray task (``runner: ray``,
with ``num_cpus``/``num_gpus``, e.g. on a GPU node of a cluster).

Writes ``<output>/metrics.json`` (per variant: mIoU, mAcc, overall accuracy, the mean cosine of
corresponding pixels in view pairs, and the run's settings) and ``<output>/metrics.md`` (a table).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from openscene_ray.fit3d.probe.config import ProbeConfig
from openscene_ray.kernel import storage

__all__ = ["ProbeSummary", "probe_all", "run_probe"]

log = logging.getLogger(__name__)


@dataclass
class ProbeSummary:
    output: str
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"output": self.output, "variants": self.variants, "seconds": round(self.seconds, 2)}

    def table(self) -> str:
        lines = ["| variant | backbone | dim | mIoU | mAcc | oAcc | multi-view cosine | shuffled pairs |",
                 "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, v in self.variants.items():
            cosine, shuffled = ("-" if v[k] is None else f"{v[k]:.4f}" for k in ("consistency", "consistency_shuffled"))
            lines.append(f"| {name} | {v['backbone']} | {v['feature_dim']} | {100 * v['miou']:.1f} | "
                         f"{100 * v['macc']:.1f} | {100 * v['oacc']:.1f} | {cosine} | {shuffled} |")  # fmt: skip
        return "\n".join(lines) + "\n"


def probe_all(config: ProbeConfig, threads: int | None = None) -> dict[str, dict[str, Any]]:
    """Every variant's scores (runs wherever it is called: here or in a Ray task)."""
    import torch

    from openscene_ray.fit3d.probe.core import load_data, probe_variant, variant_configs

    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if config.num_gpus > 0 and torch.cuda.is_available() else "cpu")
    backbones = variant_configs(config)
    data = load_data(config)
    results = {}
    for name, backbone in backbones.items():
        results[name] = probe_variant(config, backbone, data, device)
        log.info("fit3d-probe %s: %s", name, results[name])
    return results


def run_probe(config: ProbeConfig) -> ProbeSummary:
    """Probe every variant and write ``metrics.json`` and ``metrics.md``; returns the summary."""
    start = time.perf_counter()
    if config.runner == "ray":
        import ray

        from openscene_ray.kernel.ray_runtime import init_ray

        init_ray(config.address)
        task = ray.remote(probe_all).options(num_cpus=config.num_cpus, num_gpus=config.num_gpus)
        results = ray.get(task.remote(config, max(1, int(config.num_cpus))))
    else:
        results = probe_all(config)
    summary = ProbeSummary(config.output, results, time.perf_counter() - start)
    document = summary.as_dict() | {"config": config.model_dump(mode="json")}
    storage.write_bytes(storage.join(config.output, "metrics.json"), json.dumps(document, indent=2).encode())
    storage.write_bytes(storage.join(config.output, "metrics.md"), summary.table().encode())
    return summary
