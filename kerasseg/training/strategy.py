"""Choosing the tf.distribute strategy for ``kerasseg fit``.

- ``TF_CONFIG`` in the environment -> ``MultiWorkerMirroredStrategy`` (one process per worker);
- otherwise ``MirroredStrategy`` over ``devices`` GPUs, or over ``devices`` logical CPU devices
  on a machine without GPUs (so the multi-device path runs anywhere);
- default (``devices=None``): all GPUs when there is more than one, else the default strategy.

Logical CPU devices must be configured before TensorFlow initialises its runtime; if it has
already started with fewer devices, a clear :class:`KerassegError` says so.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from kerasseg.errors import KerassegError, argument_error


def _ensure_logical_cpus(n: int) -> list[str]:
    cpus = tf.config.list_physical_devices("CPU")  # does not initialise the runtime
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # runtime already initialised: use what exists if it is enough
        pass
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < n:
        raise KerassegError(
            f"--devices {n}: TensorFlow is already initialised with {len(logical)} CPU device(s); "
            "request the devices before any TensorFlow work (e.g. in a fresh process)")
    return [d.name for d in logical[:n]]


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cluster_role(tf_config: str | None = None) -> tuple[bool, str]:
    """``(is_chief, name)`` of this process in a ``TF_CONFIG`` cluster (default: the environment's).

    The chief is the ``chief`` task when the cluster has one, else worker 0 (TensorFlow's rule);
    ``name`` is ``"<type>-<index>"`` (``"chief-0"`` without ``TF_CONFIG``, or when it cannot be
    read: a single process is its own chief).
    """
    if tf_config is None:
        tf_config = os.environ.get("TF_CONFIG")
    if not tf_config:
        return True, "chief-0"
    try:
        cfg = json.loads(tf_config)
        task = cfg.get("task") or {}
        cluster = cfg.get("cluster") or {}
        kind = str(task.get("type", "worker"))
        index = int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError):
        return True, "chief-0"
    if kind == "chief":
        return True, f"chief-{index}"
    has_chief = bool(cluster.get("chief")) if isinstance(cluster, dict) else False
    return (kind == "worker" and index == 0 and not has_chief), f"{kind}-{index}"


def get_strategy(devices: int | None = None) -> tf.distribute.Strategy:
    """The strategy for ``devices`` replicas (see the module docstring)."""
    if devices is not None and (isinstance(devices, bool) or int(devices) != devices or devices < 1):
        raise argument_error("devices", f"must be a positive integer, got {devices!r}")
    tf_config = os.environ.get("TF_CONFIG")
    if tf_config:
        try:
            cluster = json.loads(tf_config)
            cluster["cluster"]["worker"]
        except (ValueError, KeyError, TypeError):
            raise KerassegError("TF_CONFIG is not valid JSON with cluster.worker") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if devices is None:
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    devices = int(devices)
    if gpus:
        if devices > len(gpus):
            raise argument_error("devices", f"{devices}: only {len(gpus)} GPU(s) present")
        if devices == 1:
            return tf.distribute.OneDeviceStrategy("/gpu:0")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(devices)])
    if devices == 1:
        return tf.distribute.get_strategy()
    cores = available_cpus()
    if devices > cores:
        raise argument_error("devices", f"{devices}: no GPU and only {cores} CPU core(s) available; "
                            f"use at most --devices {cores}")
    names = _ensure_logical_cpus(devices)
    return cpu_mirrored_strategy(names)


def cpu_mirrored_strategy(names):
    """MirroredStrategy over logical CPU devices.

    TensorFlow's default for CPUs is CollectiveAllReduce, whose collective instance keys
    collide when a second strategy is created in the same process (a second ``fit`` in one
    Python session, ``reproduce``): "Shape mismatch in the collective instance". Reducing
    to one device has no such shared state and gives the same sums.
    """
    return tf.distribute.MirroredStrategy(
        list(names), cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def eval_batch_size(n: int, batch_size: int, replicas: int) -> int:
    """A batch size for evaluating ``n`` examples on ``replicas`` replicas under tf.distribute.

    Every batch but the last is split evenly (the size is a multiple of ``replicas``: Keras
    builds the model from the first batch reduced over the replicas, which needs equal shares),
    and the last batch gives every replica at least one example (an empty share crashes some
    CPU kernels, e.g. oneDNN convolutions). Metrics are sums over the replicas, so no example
    is padded or counted twice. ``batch_size`` when it qualifies, else the nearest qualifying
    multiple of ``replicas`` below it (then above it); a one-line error when none exists.
    """
    n, batch_size, replicas = int(n), int(batch_size), int(replicas)
    if replicas <= 1:
        return batch_size

    def ok(b):
        return b % replicas == 0 and (n % b == 0 or n % b >= replicas)

    top = max(batch_size, replicas)
    candidates = list(range(top - top % replicas, replicas - 1, -replicas))
    candidates += list(range(top - top % replicas + replicas, n + replicas, replicas))
    for b in candidates:
        if ok(b):
            return b
    usable = [d for d in range(replicas - 1, 0, -1) if d <= n]
    raise argument_error("devices", f"{replicas}: the {n} validation ROIs cannot be split over "
                        f"{replicas} replicas without an empty share; use --devices {usable[0]}"
                        if usable else f"--devices {replicas}: too few validation ROIs ({n})")
