"""``SegmentationModel``: the papers' training step around any Contract-3 model.

The wrapped network (``model.net``) is a functional model with one input and dict outputs
``{"net"}`` or ``{"net", "crf"}``. The wrapper only adds ``train_step``/``test_step``:

- loss per :mod:`kerasseg.training.losses` (lambda mix of CE(net) and NLL(crf), optional L2);
- optional adversarial training with the fast gradient method (Zhu eq. 7-8): the input
  gradient ``g = d L(x, y) / d x`` comes from the *same* tape as the clean loss,
  ``r = epsilon * g / ||g||_2`` per example (a zero gradient gives ``r = 0``), and the step
  minimises ``L(x) + L(x + stop_gradient(r))``: one extra forward/backward pass;
- metrics as Keras metric objects: ``loss``, ``clean_loss``, ``adv_loss`` (adversarial runs),
  ``dice`` on training batches; ``loss`` and ``dice`` in ``test_step`` (``val_*`` in ``fit``).

What is saved for users is the inner functional network (``model.net.save(...)``), which
evaluation and export consume; the wrapper is still serialisable for completeness.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasseg.training import losses
from kerasseg.training.metrics import DiceScore


def fgm_perturbation(grad, epsilon):
    """``epsilon * g / ||g||_2`` with the norm taken per example (over all but axis 0).

    A zero gradient gives a zero perturbation (no NaN). The gradient is first divided by its
    per-example max-abs value so tiny gradients do not underflow when squared.
    """
    grad = tf.cast(grad, tf.float32)
    axes = list(range(1, len(grad.shape)))
    scale = tf.reduce_max(tf.abs(grad), axis=axes, keepdims=True)
    g = tf.math.divide_no_nan(grad, scale)
    norm = tf.sqrt(tf.reduce_sum(tf.square(g), axis=axes, keepdims=True))
    return float(epsilon) * tf.math.divide_no_nan(g, norm)


def _multi_worker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy whose cluster has more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec() if resolver is not None else None
    if spec is None:
        return False
    jobs = spec.jobs
    return sum(spec.num_tasks(j) for j in jobs if j in ("chief", "worker")) > 1


@keras.saving.register_keras_serializable(package="kerasseg")
class SegmentationModel(keras.Model):
    """Training wrapper: ``SegmentationModel(net, lam=0.67, l2=0.0, adversarial=False, epsilon=0.1)``."""

    def __init__(self, net, lam=0.0, l2=0.0, adversarial=False, epsilon=0.1, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.lam = float(lam)
        self.l2 = float(l2)
        self.adversarial = bool(adversarial)
        self.epsilon = float(epsilon)
        outs = net.output if isinstance(net.output, dict) else {}
        self.final_key = "crf" if "crf" in outs else "net"
        shape = net.inputs[0].shape
        self.pixels = int(shape[1] or 1) * int(shape[2] or 1)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.clean_tracker = keras.metrics.Mean(name="clean_loss")
        self.adv_tracker = keras.metrics.Mean(name="adv_loss")
        self.dice_metric = DiceScore(name="dice")

    # ----------------------------------------------------------------- plumbing
    def call(self, inputs, training=False):
        return self.net(inputs, training=training)

    @property
    def metrics(self):
        ms = [self.loss_tracker, self.clean_tracker]
        if self.adversarial:
            ms.append(self.adv_tracker)
        ms.append(self.dice_metric)
        return ms

    def get_config(self):
        return {
            "net": keras.saving.serialize_keras_object(self.net),
            "lam": self.lam, "l2": self.l2, "adversarial": self.adversarial,
            "epsilon": self.epsilon, "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["net"] = keras.saving.deserialize_keras_object(config["net"])
        return cls(**config)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Multi-worker only: Keras's symbolic build first reduces a data batch across workers
        # (strategy.reduce on a PerReplica batch), which fails under
        # MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...) to a
        # Tensor"). A built model needs none of that: only the optimizer's slots must exist.
        # Every other strategy takes Keras's own path.
        if (_multi_worker(self.distribute_strategy) and self.built
                and all(layer.built for layer in self._flatten_layers())):
            if self.optimizer is not None and not self.optimizer.built:
                with self.distribute_strategy.scope():
                    self.optimizer.build(self.trainable_variables)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------- steps
    @staticmethod
    def _unpack(data):
        x, y = data[0], data[1]
        return tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32)

    def _penalty(self, weights):
        nrep = tf.distribute.get_strategy().num_replicas_in_sync
        return losses.l2_penalty(weights, self.l2, self.pixels) / float(nrep)

    def compute_gradients(self, x, y):
        """Gradients of this step's loss w.r.t. ``net.trainable_weights`` plus loss parts.

        Returns ``(grads, per_example_clean, per_example_adv or None, outputs, global_batch)``.
        """
        weights = self.net.trainable_weights
        gb = losses.global_batch_size(tf.shape(x)[0])
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = self.net(x, training=True)
            per_ex = losses.per_example_loss(out, y, self.lam)
            total = losses.scale_for_replicas(per_ex, gb) + self._penalty(weights)
        per_adv = None
        if self.adversarial:
            grads = tape.gradient(total, [x] + list(weights))
            r = tf.stop_gradient(fgm_perturbation(grads[0], self.epsilon))
            grads = grads[1:]
            with tf.GradientTape() as tape2:
                out_adv = self.net(x + r, training=True)
                per_adv = losses.per_example_loss(out_adv, y, self.lam)
                adv = losses.scale_for_replicas(per_adv, gb)
            grads2 = tape2.gradient(adv, weights)
            grads = [a if b is None else (b if a is None else a + b) for a, b in zip(grads, grads2)]
        else:
            grads = tape.gradient(total, weights)
        return grads, per_ex, per_adv, out, gb

    def train_step(self, data):
        x, y = self._unpack(data)
        weights = self.net.trainable_weights
        grads, per_ex, per_adv, out, _ = self.compute_gradients(x, y)
        pairs = [(g, w) for g, w in zip(grads, weights) if g is not None]
        self.optimizer.apply_gradients(pairs)
        n = tf.cast(tf.shape(x)[0], tf.float32)
        clean = tf.reduce_mean(per_ex)
        penalty = losses.l2_penalty(weights, self.l2, self.pixels)
        total = clean + penalty
        self.clean_tracker.update_state(clean, sample_weight=n)
        if per_adv is not None:
            adv = tf.reduce_mean(per_adv)
            self.adv_tracker.update_state(adv, sample_weight=n)
            total = total + adv
        self.loss_tracker.update_state(total, sample_weight=n)
        self.dice_metric.update_state(y, out[self.final_key])
        return self._logs({m.name: m.result() for m in self.metrics})

    def test_step(self, data):
        x, y = self._unpack(data)
        out = self.net(x, training=False)
        per_ex = losses.per_example_loss(out, y, self.lam)
        self.loss_tracker.update_state(tf.reduce_mean(per_ex),
                                       sample_weight=tf.cast(tf.shape(x)[0], tf.float32))
        self.dice_metric.update_state(y, out[self.final_key])
        return self._logs({"loss": self.loss_tracker.result(), "dice": self.dice_metric.result()})

    def _logs(self, logs: dict) -> dict:
        """Step logs in the shape Keras's TF trainer can reduce under the current strategy.

        Across several workers Keras reduces every step output with
        ``strategy.reduce("MEAN", v, axis=0)``, which rejects a scalar ("Invalid reduction
        dimension 0"). There each value is returned as shape (1,): the reduction averages the
        workers' (already aggregated) metric results and hands back a scalar again.
        """
        if not _multi_worker(self.distribute_strategy):
            return logs
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
