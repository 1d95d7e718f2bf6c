"""``SegmentationModel``: the papers' training objective around any Contract-3 network.

The wrapped network (``model.net``) is a functional model with one input and dict outputs
``{"net"}`` or ``{"net", "crf"}``. The wrapper follows Keras 3's training hooks:

- :meth:`SegmentationModel.compute_loss`: the lambda mix of :mod:`kerasseg.training.losses`
  (``(1 - lam) CE(net) + lam NLL(crf)``) plus ``self.losses`` while training, i.e. Zhu's eq. (8)
  L2 as ``kernel_regularizer`` on the network's kernels (set by the constructor:
  :func:`kerasseg.training.losses.attach_kernel_l2`, so it is saved with the network);
- ``train_step`` is Keras's own unless ``adversarial``: then it adds the fast gradient method
  pass (Zhu eq. 7, :func:`kerasseg.training.adversarial.fgm_perturbation`): the input gradient
  comes from the tape of the clean loss, and the step minimises
  ``L(x) + regularisation + L(x + stop_gradient(r))`` (one extra forward/backward pass);
- ``test_step`` evaluates :meth:`compute_loss` with ``training=False`` (data term only);
- metrics: ``loss``, ``clean_loss`` (data term), ``adv_loss`` (adversarial runs), ``dice`` of the
  final output (``val_*`` in ``fit``).

Distribution: the data term of each replica is ``sum(per_example) / global_batch`` and the
regularisation is divided by the number of replicas, so the summed replica gradients equal the
single-device gradient, also for an uneven last batch.

What is saved for users is the inner functional network (``model.net``), which evaluation and
export consume; the wrapper is serialisable too.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasseg.training import losses
from kerasseg.training.adversarial import fgm_perturbation
from kerasseg.training.metrics import DiceScore
from kerasseg.keras_private import has_symbolic_build_hook


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


#: Keras's private symbolic-build hook exists as expected (kerasseg.keras_private): override it then
SYMBOLIC_BUILD_HOOK = has_symbolic_build_hook()


@keras.saving.register_keras_serializable(package="kerasseg")
class SegmentationModel(keras.Model):
    """Training wrapper of a segmentation network (CRU-Net eq. 5, Zhu eq. 7-8).

    Args:
        net: a Contract-3 network (one image input, dict outputs ``net`` [and ``crf``]).
        lam: weight of the CRF's NLL in ``(1 - lam) CE(net) + lam NLL(crf)``.
        l2: Zhu's L2 weight, relative to the per-image pixel-summed NLL; set as
            ``kernel_regularizer`` on the kernels of ``net`` (not biases, prior, CRF or fusion).
        adversarial: add the FGM pass at ``x + epsilon * g / ||g||_2`` to every step.
        epsilon: the FGM step size (per-example L2 norm of the perturbation).

    Input shape:
        ``(batch, H, W, 1)`` normalised images, as ``net``.

    Output shape:
        ``net``'s dict of ``(batch, H, W, 2)`` probabilities.

    Example:

    >>> import keras, numpy as np
    >>> from kerasseg.models import build_model
    >>> from kerasseg.training.segmentation_model import SegmentationModel
    >>> model = SegmentationModel(build_model("fcn", input_size=40), l2=0.5)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.zeros((2, 40, 40, 1), "float32")
    >>> y = np.stack([np.ones((2, 40, 40)), np.zeros((2, 40, 40))], -1).astype("float32")
    >>> sorted(model.train_on_batch(x, y, return_dict=True))
    ['clean_loss', 'dice', 'loss']
    """

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
        losses.attach_kernel_l2(net, self.l2, self.pixels)
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

    if SYMBOLIC_BUILD_HOOK:
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            # Multi-worker only: Keras's symbolic build first reduces a data batch across workers
            # (strategy.reduce on a PerReplica batch), which fails under
            # MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...) to a
            # Tensor"; tests/training/test_training_fit.py::test_multiworker_*). A built model needs none
            # of that: only the optimizer's slots must exist. Every other strategy takes Keras's path.
            if (_multi_worker(self.distribute_strategy) and self.built
                    and all(layer.built for layer in self._flatten_layers())):
                if self.optimizer is not None and not self.optimizer.built:
                    with self.distribute_strategy.scope():
                        self.optimizer.build(self.trainable_variables)
                return
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------- loss
    def regularization_loss(self):
        """``sum(self.losses)``: Zhu's L2 on the kernels (plus any ``add_loss`` of the layers)."""
        terms = [tf.reduce_sum(tf.cast(v, tf.float32)) for v in self.losses]
        return tf.add_n(terms) if terms else tf.constant(0.0)

    def _data_loss(self, y, y_pred):
        """``(per-example loss (B,), this replica's share of the global-batch mean)``."""
        per_ex = losses.per_example_loss(y_pred, tf.cast(y, tf.float32), self.lam)
        gb = losses.global_batch_size(tf.shape(per_ex)[0])
        return per_ex, losses.scale_for_replicas(per_ex, gb)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """This replica's share of ``lambda-mix + self.losses`` (regularisation while training).

        Also updates the ``clean_loss`` metric (data term) and, outside an adversarial training
        step (whose ``loss`` also holds the FGM term), the ``loss`` metric.
        """
        per_ex, data = self._data_loss(y, y_pred)
        reg = self.regularization_loss() if training else tf.constant(0.0)
        n = tf.cast(tf.shape(per_ex)[0], tf.float32)
        clean = tf.reduce_mean(per_ex)
        self.clean_tracker.update_state(clean, sample_weight=n)
        if not (training and self.adversarial):
            self.loss_tracker.update_state(clean + reg, sample_weight=n)
        nrep = tf.distribute.get_strategy().num_replicas_in_sync
        return data + reg / float(nrep)

    # ------------------------------------------------------------------- steps
    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Dice of the final output; returns the logs of :attr:`metrics`."""
        self.dice_metric.update_state(y, y_pred[self.final_key])
        return self._logs({m.name: m.result() for m in self.metrics})

    def train_step(self, data):
        """Keras's step; with ``adversarial`` the FGM step ``L(x) + reg + L(x + r)``."""
        if not self.adversarial:
            return super().train_step(data)
        x, y = data[0], data[1]
        x = tf.convert_to_tensor(x, tf.float32)
        weights = self.trainable_weights
        with tf.GradientTape() as tape:
            tape.watch(x)
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, training=True)
        grads = tape.gradient(loss, [x] + list(weights))
        r = tf.stop_gradient(fgm_perturbation(grads[0], self.epsilon))
        grads = grads[1:]
        with tf.GradientTape() as tape2:
            per_adv, adv = self._data_loss(y, self(x + r, training=True))
        grads2 = tape2.gradient(adv, weights)
        grads = [a if b is None else (b if a is None else a + b) for a, b in zip(grads, grads2)]
        # the logged total: all three terms at the weights this step starts from
        clean = tf.reduce_mean(losses.per_example_loss(y_pred, tf.cast(y, tf.float32), self.lam))
        total = clean + self.regularization_loss() + tf.reduce_mean(per_adv)
        with tf.control_dependencies([total]):
            self.optimizer.apply_gradients([(g, w) for g, w in zip(grads, weights) if g is not None])
        n = tf.cast(tf.shape(per_adv)[0], tf.float32)
        self.adv_tracker.update_state(tf.reduce_mean(per_adv), sample_weight=n)
        self.loss_tracker.update_state(total, sample_weight=n)
        return self.compute_metrics(x, y, y_pred)

    def test_step(self, data):
        """``compute_loss(training=False)`` (data term) and Dice; logs ``loss`` and ``dice``."""
        x, y = data[0], data[1]
        y_pred = self(x, training=False)
        self.compute_loss(x, y, y_pred, training=False)
        self.dice_metric.update_state(y, y_pred[self.final_key])
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
