"""Training for `flopwatt swarm`: size the model to the slowest rank, then train it with DDP or DiLoCo.

Both strategies train `probes.training.GPT` from the same initial weights on the same global stream
of sequences (probes.swarm_language), with the same inner optimizer and schedule, and are scored on
the same held-out sequences at the same token counts: every H steps, which for DiLoCo is after each
outer step. Evaluation and the measurements taken beside training (a DDP step without communication,
the same all-reduce alone) run outside the training clock that the time budget and tokens/s count.

- DDP: torch's DistributedDataParallel, its all-reduce overlapped with the backward pass, gradients
  sent as fp16 (the stock `fp16_compress_hook`; bf16 training all-reduces 16-bit gradients, as the
  projection assumes). Buckets of 1/16 of the gradient (0.25 to 25 MiB), so the all-reduce can start
  early in the backward, as the default 25 MiB buckets do for a multi-GB gradient.
- DiLoCo (Douillard et al. 2023): H inner AdamW steps from the shared outer weights, then the
  pseudo-gradient (outer - local) is summed over the ranks in 16 or 8 bits (probes.swarm_ring),
  averaged and applied by an outer Nesterov SGD step, lr 0.7 and momentum 0.9 (the paper's values).
  Each rank keeps its own inner optimizer state across rounds, as in the paper.

The inner optimizer: AdamW, lr 3e-3 after a 10-step linear warm-up, betas (0.9, 0.95), weight decay
0.1. On this language a 0.35M-parameter model with it passes the bigram level within 100 steps of 8
sequences, where lr 1e-2 learnt more slowly (measured while choosing; docs/measurements.md).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import psutil
import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from probes.measurement import ProbeError, ProgressCallback
from probes.swarm_language import HELD_OUT, Language
from probes.swarm_link import Link
from probes.swarm_ring import all_reduce_fp16, ring_all_reduce, wire_size
from probes.timing import synchronize
from probes.training import GPT, GPTConfig, training_memory

SEQ_LEN = 64
MICRO_BATCH = 8
LR, WARMUP_STEPS, BETAS, WEIGHT_DECAY = 3e-3, 10, (0.9, 0.95), 0.1
OUTER_LR, OUTER_MOMENTUM = 0.7, 0.9
HELD_OUT_SEQUENCES = 64
#: Widths tried when sizing the model (layers = width / 32, up to 24; heads of 32).
WIDTHS = (64, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048)
#: Once the model reaches --max-params, the micro-batch doubles this many times at most.
BATCH_DOUBLINGS = 6
#: DDP's compute per step is timed alone after every this many steps (outside the training clock).
COMPUTE_EVERY = 2
#: Share of the free memory the sizing may plan for (the rest: allocator slack, the OS, the eval).
MEMORY_SHARE = 0.5


def model_config(width: int, batch: int, vocab: int) -> GPTConfig:
    return GPTConfig(n_layer=min(24, max(2, width // 32)), n_embd=width, n_head=width // 32, seq_len=SEQ_LEN,
                     vocab_size=vocab, batch_size=batch)


def ladder(vocab: int, max_params: float) -> list[GPTConfig]:
    """Models from the smallest up to `max_params`, then the largest with ever larger micro-batches."""
    sizes = [model_config(w, MICRO_BATCH, vocab) for w in WIDTHS if model_config(w, 1, vocab).n_params <= max_params]
    if not sizes:
        raise ProbeError(f"swarm: --max-params {max_params:g} is below the smallest model ({model_config(WIDTHS[0], 1, vocab).n_params} parameters)")
    top = sizes[-1]
    return sizes + [model_config(top.n_embd, MICRO_BATCH * 2**k, vocab) for k in range(1, BATCH_DOUBLINGS + 1)]


def compute_dtype(device: torch.device) -> str:
    """bf16 autocast where the GPU has bf16 tensor cores, fp32 everywhere else (no loss scaling needed)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def _autocast(device: torch.device, dtype: str) -> AbstractContextManager[object]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


@dataclass(frozen=True)
class Setup:
    """What every rank agreed on before training."""

    language: Language
    cfg: GPTConfig
    dtype: str
    budget_s: float
    h: int
    bits: int
    #: Tokens of one global step.
    tokens_per_step: int


def _batch(link: Link, language: Language, b: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of global step `step`: sequences (step * world + rank) * b onwards of the stream."""
    first = (step * link.world + link.rank) * b
    seqs = torch.from_numpy(language.sequences(first, b, SEQ_LEN)).to(link.device)
    return seqs[:, :-1], seqs[:, 1:]


def size_model(link: Link, language: Language, target_s: float, max_params: float, dtype: str,
               progress: ProgressCallback) -> tuple[GPTConfig, list[float]]:
    """The largest model of the ladder whose step takes at most `target_s` on every rank.

    Each rank times steps of growing models (one warm-up, then the median of two) until a step takes
    longer than `target_s` or would not fit its memory; the ranks then take the smallest of their
    answers, so the slowest device sets the size. Returns it and this rank's step times.
    """
    candidates = ladder(language.vocab, max_params)
    fits, times = 0, []
    budget = _free_bytes(link.device) * MEMORY_SHARE
    for index, cfg in enumerate(candidates):
        if training_memory(cfg, dtype).total > budget:
            break
        progress(f"swarm: sizing the model, trying {cfg.describe()}", 0.0)
        times.append(_step_time(link, language, cfg, dtype, index))
        if times[-1] > target_s:
            break
        fits = index
    agreed = torch.tensor([fits], dtype=torch.int64, device=link.comm_device)
    options = torch.distributed.AllreduceOptions()
    options.reduceOp = torch.distributed.ReduceOp.MIN
    link.group.allreduce([agreed], options).wait()
    return candidates[int(agreed.item())], times


def _step_time(link: Link, language: Language, cfg: GPTConfig, dtype: str, step: int) -> float:
    """Seconds of a training step of a fresh `cfg` model: the median of two, after one warm-up."""
    model = GPT(cfg, link.device)
    optimizer = _inner_optimizer(model)
    x, y = _batch(link, language, cfg.batch_size, step)
    times = []
    for _ in range(3):
        synchronize(link.device)
        start = time.perf_counter()
        with _autocast(link.device, dtype):
            loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(link.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def bucket_elements(cfg: GPTConfig) -> int:
    """Values per all-reduce bucket: 1/16 of the gradient, at least 0.25 MiB and at most 25 MiB of fp32."""
    return int(min(25 * 2**20, max(2**18, 4 * cfg.n_params / 16))) // 4


def _inner_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)


def _set_lr(optimizer: torch.optim.Optimizer, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = LR * min(1.0, (step + 1) / WARMUP_STEPS)


class Record:
    """One rank's measurements of one strategy: appended by the training loop, copied by the watchdog."""

    def __init__(self, **fixed: Any) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {"interval_s": [], "compute_s": [], "sync_s": [], "sync_bytes": [], **fixed}

    def add(self, **values: float) -> None:
        with self._lock:
            for key, value in values.items():
                self._data.setdefault(key, []).append(value)

    def extend(self, **values: list[float]) -> None:
        with self._lock:
            for key, more in values.items():
                self._data.setdefault(key, []).extend(more)

    def set(self, **values: Any) -> None:
        with self._lock:
            self._data.update(values)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {k: list(v) if isinstance(v, list) else v for k, v in self._data.items()}


class Stopped(Exception):
    """Another rank failed (the watchdog said so): leave the loop at the next step."""


@dataclass
class Run:
    """One strategy on this rank: where it records, how it reports, what it checks between steps."""

    strategy: str
    link: Link
    setup: Setup
    record: Record
    #: Held-out evaluations: tokens, training seconds and per-sequence losses (the same on every rank).
    on_eval: Callable[[float, float, list[float]], None]
    progress: ProgressCallback
    stop: threading.Event
    clock: float = 0.0
    step: int = 0
    _mark: int | None = None
    _last_clock: float = 0.0

    def check(self) -> None:
        if self.stop.is_set():
            raise Stopped()

    def sync_device(self) -> None:
        synchronize(self.link.device)

    def evaluate(self, model: torch.nn.Module) -> bool:
        """Score the held-out sequences (each rank its share) and decide together whether to go on:
        every rank sees every loss and every rank's clock, so every rank decides alike."""
        link, setup = self.link, self.setup
        held_out = setup.language.sequences(0, HELD_OUT_SEQUENCES, SEQ_LEN, HELD_OUT)
        board = torch.zeros(HELD_OUT_SEQUENCES + link.world, dtype=torch.float64)
        with torch.no_grad(), _autocast(link.device, setup.dtype):
            for i in range(link.rank, HELD_OUT_SEQUENCES, link.world):
                seq = torch.from_numpy(held_out[i : i + 1]).to(link.device)
                board[i] = float(model(seq[:, :-1], seq[:, 1:]))
        board[HELD_OUT_SEQUENCES + link.rank] = self.clock
        shared = board.to(link.comm_device)
        link.group.allreduce([shared]).wait()
        values = shared.cpu().tolist()
        self.on_eval(self.step * setup.tokens_per_step, self.clock, values[:HELD_OUT_SEQUENCES])
        clock = max(values[HELD_OUT_SEQUENCES:])
        interval, self._last_clock = clock - self._last_clock, clock
        self.progress(f"swarm: {self.strategy} step {self.step}, {clock:.0f} of "
                      f"{setup.budget_s:.0f} s", min(1.0, clock / setup.budget_s))
        # Go on while another interval like the last would end nearer the budget than stopping now.
        return clock + interval / 2 < setup.budget_s

    def tick(self, interval_s: float, steps: int) -> None:
        """An interval of `steps` training steps ended: it counts on the training clock."""
        self.clock += interval_s
        self.step += steps
        self.record.add(interval_s=interval_s)
        self.record.set(tokens=self.step * self.setup.cfg.tokens_per_step, train_s=self.clock)

    def count_sent(self, ends: bool = False) -> None:
        """Mark a sync's start (or, with `ends`, the end of the last one's window) on the interface's
        byte counter. A window runs to the next mark, not to the sync's return: bytes still queued in
        the socket and the router when a send returns leave within the window they belong to."""
        now = self.link.nic.sent()
        if self._mark is not None and now is not None:
            self.record.add(sync_bytes=now - self._mark)
        self._mark = None if ends else now


def train_ddp(run: Run) -> None:
    """Synchronous data parallel training until the budget is spent (see the module docstring)."""
    link, setup = run.link, run.setup
    torch.manual_seed(0)
    model = GPT(setup.cfg, link.device)
    ddp = DistributedDataParallel(model, process_group=link.group, bucket_cap_mb=bucket_elements(setup.cfg) * 4 / 2**20,
                                  device_ids=[link.device] if link.device.type == "cuda" else None)
    ddp.register_comm_hook(link.group, default_hooks.fp16_compress_hook)
    optimizer = _inner_optimizer(model)
    _ddp_pass(run, ddp)  # warm-up: the first backward builds DDP's buckets
    optimizer.zero_grad(set_to_none=True)
    optimizer_s: list[float] = []
    going = run.evaluate(model)
    while going:
        alone = []
        for inner in range(setup.h):
            run.check()
            _set_lr(optimizer, run.step)
            run.count_sent()
            start = time.perf_counter()
            _ddp_pass(run, ddp)  # returns once every bucket's all-reduce has finished
            middle = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run.sync_device()
            end = time.perf_counter()
            optimizer_s.append(end - middle)
            run.tick(end - start, 1)
            if inner % COMPUTE_EVERY == COMPUTE_EVERY - 1 or setup.h < COMPUTE_EVERY:
                alone.append(_compute_alone(run, ddp) + statistics.median(optimizer_s))
        run.record.extend(compute_s=alone)
        run.record.add(busy_s=statistics.median(alone) * setup.h)
        going = run.evaluate(model)
        run.count_sent(ends=True)  # before the all-reduce timed alone, whose bytes are not a step's
        _comm_alone(run)


def _ddp_pass(run: Run, ddp: DistributedDataParallel) -> None:
    x, y = _batch(run.link, run.setup.language, run.setup.cfg.batch_size, run.step)
    with _autocast(run.link.device, run.setup.dtype):
        loss = ddp(x, y)
    loss.backward()
    run.sync_device()


def _compute_alone(run: Run, ddp: DistributedDataParallel) -> float:
    """Seconds of a DDP forward and backward without communication (`no_sync`, gradients dropped),
    all ranks at once, right beside the steps: they share the machines as those steps did."""
    run.link.group.barrier().wait()
    start = time.perf_counter()
    with ddp.no_sync():
        _ddp_pass(run, ddp)
    seconds = time.perf_counter() - start
    for p in ddp.parameters():
        p.grad = None
    return seconds


def _comm_alone(run: Run) -> None:
    """The gradient all-reduce alone: DDP's buckets of fp16 values, all ranks at once."""
    link = run.link
    run.check()
    flat = torch.rand(run.setup.cfg.n_params, device=link.comm_device).add_(1.0)
    link.group.barrier().wait()
    start = time.perf_counter()
    all_reduce_fp16(flat, link.group, bucket_elements(run.setup.cfg))
    synchronize(link.comm_device)
    run.record.add(sync_s=time.perf_counter() - start)


def train_diloco(run: Run) -> None:
    """DiLoCo until the budget is spent (see the module docstring)."""
    link, setup = run.link, run.setup
    torch.manual_seed(0)
    model = GPT(setup.cfg, link.device)
    optimizer = _inner_optimizer(model)
    outer = torch.nn.Parameter(parameters_to_vector(model.parameters()).detach().clone())
    outer_optimizer = torch.optim.SGD([outer], lr=OUTER_LR, momentum=OUTER_MOMENTUM, nesterov=True)
    x, y = _batch(link, setup.language, setup.cfg.batch_size, 0)
    with _autocast(link.device, setup.dtype):
        model(x, y).backward()  # warm-up, no step taken
    optimizer.zero_grad(set_to_none=True)
    going = run.evaluate(model)
    while going:
        started, busy = time.perf_counter(), 0.0
        for inner in range(setup.h):
            run.check()
            _set_lr(optimizer, run.step + inner)
            start = time.perf_counter()
            x, y = _batch(link, setup.language, setup.cfg.batch_size, run.step + inner)
            with _autocast(link.device, setup.dtype):
                loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run.sync_device()
            run.record.add(compute_s=time.perf_counter() - start)
            busy += time.perf_counter() - start
        run.record.add(busy_s=busy)
        run.check()
        link.group.barrier().wait()  # the wait for the slowest rank stays out of the sync's time
        delta = (outer.detach() - parameters_to_vector(model.parameters()).detach()).to(link.comm_device)
        run.count_sent()
        start = time.perf_counter()
        if setup.bits == 16:
            all_reduce_fp16(delta, link.group, bucket_elements(setup.cfg))
        else:
            ring_all_reduce(delta, link.group, setup.bits)
        synchronize(link.comm_device)
        run.record.add(sync_s=time.perf_counter() - start)
        outer.grad = delta.to(outer.device).div_(link.world)
        outer_optimizer.step()
        outer_optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            vector_to_parameters(outer.detach(), model.parameters())
        run.sync_device()
        run.tick(time.perf_counter() - started, setup.h)
        going = run.evaluate(model)
    run.count_sent(ends=True)


def diloco_payload_bytes(params: int, world: int, bits: int) -> int:
    """Bytes of the whole encoded pseudo-gradient: the n chunks the ring cuts it into."""
    base, extra = divmod(params, world)
    return sum(wire_size(base + (1 if i < extra else 0), bits) for i in range(world))
