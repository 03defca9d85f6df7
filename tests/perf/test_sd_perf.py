"""SD-size throughput against the authors' loop and against the hardware (``tox -e perf``).

SD v1.4's real architecture with random weights (``sd14.py``), sampled as the paper's protocol does: DDIM,
classifier-free guidance.  On a GPU: 512×512 and 30 steps.  On the CPU the same code runs one image of 2 steps at
64×64, so the suite stays testable anywhere; its figures say nothing about a GPU.

Printed, and kept in pytest-benchmark's ``extra_info``:

* images/s of the engine (batched, one seeded generator per sample) and of the authors' loop (one pipeline call
  per prompt, reseeded each time), measured in the same run, and their ratio;
* a batch-size sweep of the engine;
* the attention processor and, on CUDA, the UNet step time under each SDPA backend;
* MFU: UNet FLOPs per image (counted with ``torch.utils.flop_counter``; two UNet samples per step for CFG) ×
  images/s ÷ the device's dense peak for the dtype (``PEAK_TFLOPS``; none for CPUs).

    tox -e perf -- --device cuda --dtype float16 -k sd
"""

from __future__ import annotations

import time

import pytest
from sd14_random import random_sd14_pipeline

from harness.api import PromptSpec
from harness.engine import ActiveState, Defaults, Engine, authors_style_loop
from harness.store import Store

# Dense tensor-core peaks in TFLOPS (vendor data sheets, no sparsity): (16-bit, TF32, plain float32).
# Matched by substring of torch.cuda.get_device_name(), first match wins.
PEAK_TFLOPS = [
    ("H200", (989.4, 494.7, 66.9)),
    ("H100 PCIe", (756.0, 378.0, 51.2)),
    ("H100 NVL", (835.0, 417.5, 60.0)),
    ("H100", (989.4, 494.7, 66.9)),  # SXM
    ("A100", (312.0, 156.0, 19.5)),
    ("L40S", (362.1, 183.0, 91.6)),
    ("L4", (121.0, 60.0, 30.3)),
    ("A10", (125.0, 62.5, 31.2)),
    ("RTX 4090", (165.2, 82.6, 82.6)),
]


def device_peak_flops(device_name: str, dtype: str, tf32: bool) -> float | None:
    for pattern, (half, tf32_peak, fp32) in PEAK_TFLOPS:
        if pattern in device_name:
            return 1e12 * (half if dtype in ("float16", "bfloat16") else tf32_peak if tf32 else fp32)
    return None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def sd(perf_device, perf_dtype):
    import torch

    gpu = perf_device.startswith("cuda")
    if gpu and perf_dtype == "float32":
        torch.backends.cuda.matmul.allow_tf32 = True  # the harness's float32 default on CUDA (runner.matmul_precision)
        torch.backends.cudnn.allow_tf32 = True
    pipe = random_sd14_pipeline(device=perf_device, dtype=perf_dtype)
    size, steps = (512, 30) if gpu else (64, 2)
    images = 16 if gpu else 1
    specs = [PromptSpec(str(i), f"a photo of thing number {i % 7}", seed=1000 + i, guidance=7.5, steps=steps, height=size, width=size)
             for i in range(images)]
    name = torch.cuda.get_device_name(perf_device) if gpu else "cpu"
    return {"pipe": pipe, "specs": specs, "size": size, "steps": steps, "gpu": gpu, "name": name}


def unet_flops_per_image(pipe, size: int, steps: int) -> int:
    """FLOPs of the UNet for one image: ``steps`` forward passes over 2 samples (CFG's unconditional + conditional)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = pipe.unet
    latent = torch.zeros(2, unet.config.in_channels, size // 8, size // 8, device=unet.device, dtype=unet.dtype)
    text = torch.zeros(2, 77, unet.config.cross_attention_dim, device=unet.device, dtype=unet.dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(latent, torch.tensor(500, device=unet.device), encoder_hidden_states=text)
    return counter.get_total_flops() * steps


def test_sd14_engine_vs_authors_loop_and_mfu(benchmark, sd, tmp_path, perf_device, perf_dtype):
    import torch

    pipe, specs, size, steps = sd["pipe"], sd["specs"], sd["size"], sd["steps"]
    batch = 8 if sd["gpu"] else 1
    engine = Engine(pipe, Store(tmp_path), "fp", Defaults(steps, size, size), perf_device, perf_dtype, batch_size=batch, show_progress=False)
    state = ActiveState("k", "sd")
    authors_specs = specs[:4] if sd["gpu"] else specs

    def engine_run():
        for start in range(0, len(specs), batch):
            engine.sample(specs[start : start + batch], state)
        _sync(perf_device)

    def authors_run():
        authors_style_loop(pipe, authors_specs, steps=steps, height=size, width=size)
        _sync(perf_device)

    engine.sample(specs[:batch], state), authors_style_loop(pipe, specs[:1], steps=steps, height=size, width=size)  # warm-up
    _sync(perf_device)
    authors_s = _timed(authors_run)
    benchmark.pedantic(engine_run, rounds=1, iterations=1)
    engine_rate = len(specs) / benchmark.stats.stats.min
    authors_rate = len(authors_specs) / authors_s
    flops = unet_flops_per_image(pipe, size, steps)
    tf32 = perf_dtype == "float32" and sd["gpu"] and torch.backends.cuda.matmul.allow_tf32
    peak = device_peak_flops(sd["name"], perf_dtype, tf32)
    mfu = flops * engine_rate / peak if peak else None
    benchmark.extra_info.update({
        "device": sd["name"], "dtype": perf_dtype + (" (TF32)" if tf32 else ""), "size": size, "steps": steps, "batch": batch,
        "engine_img_per_s": engine_rate, "authors_img_per_s": authors_rate, "speedup_vs_authors_loop": engine_rate / authors_rate,
        "unet_gflops_per_image": flops / 1e9, "peak_tflops": peak and peak / 1e12, "mfu": mfu,
        "attention_processor": type(pipe.unet.attn_processors[next(iter(pipe.unet.attn_processors))]).__name__,
    })
    print(f"\nSD-1.4 architecture, {sd['name']} {perf_dtype}{' + TF32' if tf32 else ''}, {size}x{size}, {steps} DDIM steps, CFG:"
          f"\n  engine (batch {batch}): {engine_rate:.3f} img/s; authors' loop: {authors_rate:.3f} img/s; ratio {engine_rate / authors_rate:.2f}x"
          f"\n  UNet {flops / 1e9:.1f} GFLOPs/image; MFU {'n/a (no peak known for this device)' if mfu is None else f'{100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOPS'}"
          f"\n  attention: {benchmark.extra_info['attention_processor']}")
    # The figures above are the result; this only catches a broken engine (far slower than one call per prompt).
    assert flops > 0 and engine_rate / authors_rate > 0.7


def test_sd14_batch_size_sweep(benchmark, sd, tmp_path, perf_device, perf_dtype):
    pipe, specs, size, steps = sd["pipe"], sd["specs"], sd["size"], sd["steps"]
    sizes = [1, 2, 4, 8, 16] if sd["gpu"] else [1]
    state = ActiveState("k", "sd")
    rates = {}
    for batch in sizes:
        engine = Engine(pipe, Store(tmp_path / str(batch)), "fp", Defaults(steps, size, size), perf_device, perf_dtype, batch_size=batch,
                        show_progress=False)
        chunk = (specs * batch)[:batch]
        engine.sample(chunk[:1], state)  # warm-up (kernels, allocator)
        _sync(perf_device)
        if batch == sizes[-1]:
            benchmark.pedantic(lambda chunk=chunk, engine=engine: (engine.sample(chunk, state), _sync(perf_device)), rounds=1, iterations=1)
            seconds = benchmark.stats.stats.min
        else:
            seconds = _timed(lambda chunk=chunk, engine=engine: (engine.sample(chunk, state), _sync(perf_device)))
        rates[batch] = batch / seconds
    benchmark.extra_info["img_per_s_by_batch"] = rates
    print("\nbatch-size sweep (img/s): " + ", ".join(f"{batch}: {rate:.3f}" for batch, rate in rates.items()))
    assert all(rate > 0 for rate in rates.values()) and len(rates) == len(sizes)


def test_sd14_sdpa_backends(benchmark, sd, perf_device):
    """The UNet's step time under each scaled-dot-product-attention backend (CUDA); the CPU has one."""
    import torch

    pipe, size = sd["pipe"], sd["size"]
    unet = pipe.unet
    batch = 16 if sd["gpu"] else 2
    latent = torch.randn(batch, 4, size // 8, size // 8, device=unet.device, dtype=unet.dtype)
    text = torch.randn(batch, 77, 768, device=unet.device, dtype=unet.dtype)

    def step():
        with torch.no_grad():
            unet(latent, torch.tensor(500, device=unet.device), encoder_hidden_states=text)
        _sync(perf_device)

    times = {}
    if sd["gpu"]:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH):
            try:
                with sdpa_kernel([backend]):
                    step()
                    times[backend.name] = min(_timed(step) for _ in range(3))
            except RuntimeError as err:  # not available for this dtype/device
                times[backend.name] = f"unavailable: {str(err).splitlines()[0][:80]}"
    step()
    benchmark.pedantic(step, rounds=3, iterations=1)
    times["default"] = benchmark.stats.stats.min
    benchmark.extra_info["unet_step_s_by_sdpa_backend"] = times
    print(f"\nUNet step, batch {batch} ({size}x{size}): " + ", ".join(f"{name}: {value if isinstance(value, str) else f'{value * 1e3:.1f} ms'}"
                                                                for name, value in times.items()))
    assert isinstance(times["default"], float) and times["default"] > 0
