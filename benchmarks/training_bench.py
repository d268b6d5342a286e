"""`make bench` for the training probe: its tokens/s against a plain torch loop, and its wall time.

The peer is the loop anyone would write for the same model: the probe's GPT and dtype, fused
AdamW, `zero_grad()`, steps running freely between two synchronised clock reads. Rounds alternate probe and peer so
that load from other processes hits both alike; the ratio is the median of the rounds' ratios.
Target: the probe gets >= 0.95x the peer's tokens/s (its harness costs no throughput).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from probes.timing import synchronize
from probes.training import GPT, GPTConfig, default_config, measure_training, training_dtype

TARGET_RATIO = 0.95
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def plain_loop_tokens_per_s(cfg: GPTConfig, device: torch.device, dtype: str, warmup: int, steps: int) -> float:
    """Tokens/s of `steps` free-running steps of a textbook training loop, after `warmup` steps."""
    model = GPT(cfg, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    scaler = torch.amp.GradScaler(device.type) if dtype == "fp16" else None
    tokens = torch.randint(cfg.vocab_size, (4, cfg.batch_size, cfg.seq_len), device=device)
    targets = torch.randint(cfg.vocab_size, (4, cfg.batch_size, cfg.seq_len), device=device)
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=_AUTOCAST[dtype]) if dtype in _AUTOCAST else nullcontext():
            loss = model(tokens[i % 4], targets[i % 4])
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad()
    synchronize(device)
    return steps * cfg.tokens_per_step / (time.perf_counter() - start)


def run(device: str = "cpu", rounds: int = 3, steps: int | None = None) -> dict[str, float | str]:
    """Alternate probe and peer `rounds` times; return the medians and their ratio."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    dev = torch.device(device)
    cfg = default_config(dev.type)
    dtype = training_dtype(dev)
    steps = steps or (5 if dev.type == "cpu" else 20)
    probe_tps, peer_tps, ratios, walls = [], [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        result = measure_training(device, config=cfg)
        walls.append(time.perf_counter() - start)
        [tps] = [m for m in result.measurements if m.metric == "train_tokens_per_s"]
        # the probe may have halved the batch to fit; the peer trains what the probe trained
        ran = GPTConfig(**{k: tps.params[k] for k in GPTConfig.__dataclass_fields__})
        peer = plain_loop_tokens_per_s(ran, dev, dtype, warmup=2 if dev.type == "cpu" else 5, steps=steps)
        probe_tps.append(tps.value)
        peer_tps.append(peer)
        ratios.append(tps.value / peer)
    ratio = statistics.median(ratios)
    figures: dict[str, float | str] = {
        "device": str(dev),
        "dtype": dtype,
        "model": ran.describe(),
        "probe_tokens_per_s": statistics.median(probe_tps),
        "plain_loop_tokens_per_s": statistics.median(peer_tps),
        "ratio": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "target_ratio": TARGET_RATIO,
        "probe_wall_s": statistics.median(walls),
        "rounds": rounds,
    }
    print(
        f"training {ran.describe()} on {dev} ({dtype}): probe {statistics.median(probe_tps):,.0f} tokens/s, "
        f"plain loop {statistics.median(peer_tps):,.0f} tokens/s, ratio {ratio:.3f} "
        f"(rounds {min(ratios):.3f}-{max(ratios):.3f}, target >= {TARGET_RATIO}) "
        f"{'ok' if ratio >= TARGET_RATIO else 'BELOW TARGET'}; probe wall time {statistics.median(walls):.1f} s"
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run(args.device, args.rounds)
