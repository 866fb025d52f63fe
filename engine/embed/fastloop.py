"""The engine's own inference loop for encoder-only embedding models (issue 3).

Why not ``BGEM3FlagModel.encode``: on CPU it casts the model to fp32 whatever ``use_fp16`` says, it runs its
first batch twice to probe a batch size, and it cuts batches by a fixed count. This loop runs the same
underlying HF model and tokenizer, but

* tokenises in a background thread (the device never waits for the tokenizer),
* sorts each window of documents by token length and cuts batches by a *token budget*, so padding is small
  and a batch of short headlines is as large as a batch of long articles is small,
* runs under ``torch.inference_mode()`` in bf16 on CPUs with avx512_bf16/AMX (fp32 elsewhere), fp16/bf16 on
  CUDA with pinned host memory and non-blocking copies, one worker thread per GPU,
* pools exactly as the model defines its vector (BGE-M3: CLS then L2 normalisation; sentence-transformers:
  the model's pooling mode) in float32, and restores the input order.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine import hardware
from engine.errors import EngineError

_SENTINEL = object()


# --------------------------------------------------------------------------------------------- devices
def resolve_devices(device: str | Sequence[str] = "auto") -> list[str]:
    """``"auto"`` -> every CUDA device (one worker each) or ``["cpu"]``; ``"cuda"`` -> all GPUs."""

    if not isinstance(device, str):
        devices = [str(d) for d in device]
        if not devices:
            raise EngineError("device: empty device list")
        return devices
    if device == "auto":
        if hardware.cuda_available():
            return [f"cuda:{i}" for i in range(hardware.cuda_device_count())]
        return ["cpu"]
    if device == "cuda":
        if not hardware.cuda_available():
            raise EngineError("device='cuda' but no CUDA GPU is available here; use device='cpu' or 'auto'")
        return [f"cuda:{i}" for i in range(hardware.cuda_device_count())]
    if device.startswith("cuda") and not hardware.cuda_available():
        raise EngineError(f"device={device!r} but no CUDA GPU is available here; use device='cpu' or 'auto'")
    if device != "cpu" and not device.startswith(("cuda", "mps", "xpu", "npu")):
        raise EngineError(f"device={device!r} is not one of auto, cpu, cuda, cuda:N")
    return [device]


def resolve_dtype(precision: str, device: str):
    """``auto``: bf16 on CUDA (fp16 where bf16 is missing) and on bf16-capable CPUs, else fp32."""
    import torch

    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if precision == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if hardware.cuda_bf16_supported() else torch.float16
        if device == "cpu":
            return torch.bfloat16 if hardware.cpu_supports_bf16() else torch.float32
        return torch.float32
    if precision not in names:
        raise EngineError(f"precision={precision!r} is not one of auto, fp32, bf16, fp16")
    return names[precision]


def dtype_name(dtype) -> str:
    return {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(
        str(dtype), str(dtype)
    )


# --------------------------------------------------------------------------------------------- batching
def token_budget_batches(
    lengths: np.ndarray, token_budget: int, max_batch: int | None = None
) -> list[np.ndarray]:
    """Sort by length (longest first) and cut batches whose padded size ``n * max_len`` fits the budget.

    Longest first: the most memory-hungry batch runs first, so an out-of-memory shows at once.
    A single document longer than the budget still gets its own batch.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        size = max(1, token_budget // max(longest, 1))
        if max_batch:
            size = min(size, max_batch)
        batches.append(order[start : start + size])
        start += size
    return batches


@dataclass
class _Batch:
    window: int
    rows: np.ndarray  # positions inside the window
    input_ids: object  # torch.LongTensor (b, L)
    attention_mask: object


@dataclass
class _Window:
    start: int
    out: np.ndarray
    remaining: int


# --------------------------------------------------------------------------------------------- the loop
class FastLoop:
    """Length-sorted, token-budgeted inference over an HF encoder; see the module docstring.

    Parameters are fixed at construction; ``encode``/``iter_encode`` may be called many times.
    ``pooling`` is ``"cls"`` (BGE-M3's dense vector) or ``"mean"`` (sentence-transformers mean pooling).
    """

    def __init__(
        self,
        model,
        tokenizer,
        pooling: str = "cls",
        normalize: bool = True,
        devices: Sequence[str] = ("cpu",),
        dtype=None,
        max_length: int = 512,
        token_budget: int | None = None,
        max_batch: int | None = None,
        window: int = 4096,
        pad_to_multiple_of: int | None = None,
        prefetch: int = 4,
    ):
        import torch

        if pooling not in ("cls", "mean"):
            raise EngineError(f"pooling={pooling!r} is not one of cls, mean")
        if max_length < 2:
            raise EngineError(f"max_length={max_length} must be >= 2")
        self.pooling = pooling
        self.normalize = normalize
        self.devices = list(devices)
        self.dtype = dtype or torch.float32
        self.max_length = int(max_length)
        on_gpu = self.devices[0].startswith("cuda")
        self.token_budget = int(token_budget or (32768 if on_gpu else 4096))
        self.max_batch = max_batch or (1024 if on_gpu else 256)
        self.window = int(window)
        self.pad_to_multiple_of = pad_to_multiple_of or (8 if on_gpu else 1)
        self.prefetch = prefetch
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.dim = int(model.config.hidden_size)
        self.models_ = []
        for i, dev in enumerate(self.devices):
            m = model if i == 0 else copy.deepcopy(model)
            self.models_.append(m.to(device=dev, dtype=self.dtype).eval())

    # ------------------------------------------------------------------ producer
    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return enc["input_ids"]

    def _pad(self, seqs: list[list[int]], pin: bool):
        import torch

        longest = max(len(s) for s in seqs)
        m = self.pad_to_multiple_of
        width = -(-longest // m) * m
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = s
            mask[r, : len(s)] = 1
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        if pin:
            ids_t, mask_t = ids_t.pin_memory(), mask_t.pin_memory()
        return ids_t, mask_t

    def _produce(self, texts, n_windows, q_batches, windows, cond, errors, stop) -> None:
        pin = any(d.startswith("cuda") for d in self.devices)
        try:
            for w in range(n_windows):
                start = w * self.window
                chunk = texts[start : start + self.window]
                seqs = self._tokenize(chunk)
                lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
                batches = token_budget_batches(lengths, self.token_budget, self.max_batch)
                with cond:
                    windows[w] = _Window(start, np.empty((len(chunk), self.dim), np.float32), len(batches))
                for rows in batches:
                    ids, mask = self._pad([seqs[i] for i in rows], pin)
                    while not stop.is_set():
                        try:
                            q_batches.put(_Batch(w, rows, ids, mask), timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
        except BaseException as exc:  # surfaced in the caller's thread
            with cond:
                errors.append(exc)
                stop.set()
                cond.notify_all()
        finally:
            for _ in self.devices:
                q_batches.put(_SENTINEL)

    # ------------------------------------------------------------------ consumers
    def _forward(self, model, device: str, batch: _Batch) -> np.ndarray:
        import torch.nn.functional as F

        ids = batch.input_ids.to(device, non_blocking=True)
        mask = batch.attention_mask.to(device, non_blocking=True)
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            vec = hidden[:, 0].float()
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * m).float().sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1).float()
        if self.normalize:
            vec = F.normalize(vec, p=2, dim=-1)
        return vec.cpu().numpy()

    def _consume(self, k: int, q_batches, windows, cond, errors, stop, done: list[int]) -> None:
        import torch

        model, device = self.models_[k], self.devices[k]
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        with torch.inference_mode():
            while True:
                item = q_batches.get()
                if item is _SENTINEL:
                    return
                if stop.is_set():
                    continue  # keep draining so the producer never blocks
                try:
                    vec = self._forward(model, device, item)
                except BaseException as exc:  # surfaced in the caller's thread
                    with cond:
                        errors.append(exc)
                        stop.set()
                        cond.notify_all()
                    continue
                with cond:
                    win = windows[item.window]
                    win.out[item.rows] = vec
                    win.remaining -= 1
                    done[0] += len(item.rows)
                    cond.notify_all()

    # ------------------------------------------------------------------ public
    def iter_encode(
        self,
        texts: Sequence[str],
        window: int | None = None,
        on_batch: Callable[[int], object] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, vectors)`` for consecutive windows of ``texts``, in input order.

        Memory holds only a few windows at once, so a caller can stream millions of documents.
        ``on_batch(n)`` is called (in the caller's thread) as batches finish, with the documents
        embedded since the last call: progress moves per batch, not per window.
        """
        if window is not None and window != self.window:
            if window < 1:
                raise EngineError(f"window={window} must be >= 1")
            saved, self.window = self.window, int(window)
            try:
                yield from self.iter_encode(texts, on_batch=on_batch)
            finally:
                self.window = saved
            return
        n = len(texts)
        if n == 0:
            return
        n_windows = -(-n // self.window)
        q_batches: queue.Queue = queue.Queue(maxsize=max(2, self.prefetch * len(self.devices)))
        windows: dict[int, _Window] = {}
        cond = threading.Condition()
        errors: list[BaseException] = []
        stop = threading.Event()
        done, reported = [0], 0  # documents embedded (workers count, this thread reports)
        producer = threading.Thread(
            target=self._produce,
            args=(texts, n_windows, q_batches, windows, cond, errors, stop),
            name="embed-tokenizer",
            daemon=True,
        )
        workers = [
            threading.Thread(
                target=self._consume,
                args=(k, q_batches, windows, cond, errors, stop, done),
                name=f"embed-{dev}",
                daemon=True,
            )
            for k, dev in enumerate(self.devices)
        ]
        producer.start()
        for t in workers:
            t.start()
        try:
            for w in range(n_windows):
                with cond:
                    while not errors and not (w in windows and windows[w].remaining == 0):
                        if not producer.is_alive() and w not in windows:
                            break
                        cond.wait(timeout=0.5)
                        if on_batch is not None and done[0] > reported:
                            on_batch(done[0] - reported)
                            reported = done[0]
                    if errors:
                        raise errors[0]
                    if w not in windows:
                        raise EngineError("embedding tokenizer thread stopped early")
                    win = windows.pop(w)
                    finished = done[0]
                if on_batch is not None and finished > reported:
                    on_batch(finished - reported)
                    reported = finished
                yield win.start, win.out
        finally:
            stop.set()
            producer.join()
            for t in workers:
                t.join()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """All vectors at once (float32, normalised, input order)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start, vec in self.iter_encode(texts):
            out[start : start + len(vec)] = vec
        return out


def default_threads() -> int:
    """Intra-op threads for CPU inference: all usable cores unless OMP_NUM_THREADS says otherwise."""
    from engine.hardware import usable_cpus

    return usable_cpus()
