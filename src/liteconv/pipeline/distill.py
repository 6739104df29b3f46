"""Knowledge distillation for training: a teacher's softened outputs beside the labels.

The teacher runs inside the input pipeline on each (augmented) batch, so the labels the
student trains on are ``[one-hot labels | teacher probabilities]``; the loss splits them
again. Models here end in a softmax, so logits are recovered as ``log p`` (a softmax of
``log p / T`` is the temperature-``T`` distribution the logits would give). The student is
saved as it is: nothing of the teacher stays in it.

    loss = (1 - alpha) · CE(y, p_s) + alpha · T² · KL(p_t^T ‖ p_s^T),  p^T = softmax(log p / T)

Example:
    >>> loss = DistillationLoss(num_classes=10, temperature=4.0, alpha=0.5)
"""

from __future__ import annotations

from liteconv.compat import keras, tf

EPS = 1e-7  # probabilities are clipped to [EPS, 1] before log: a softmax never gives 0


def soften(probs, temperature: float):
    """The temperature-``T`` distribution of probabilities ``probs`` (last axis)."""
    logits = tf.math.log(tf.clip_by_value(probs, EPS, 1.0))
    return tf.nn.softmax(logits / temperature, axis=-1)


class DistillationLoss(keras.losses.Loss):
    """``(1 - alpha)`` label cross-entropy plus ``alpha · T²`` KL to the teacher.

    ``y_true`` is ``[one-hot | teacher probabilities]`` (``2·num_classes`` wide) while
    training; plain one-hot labels (``num_classes`` wide, as in evaluation) give the plain
    cross-entropy.
    """

    def __init__(self, num_classes: int, temperature: float = 4.0, alpha: float = 0.5,
                 label_smoothing: float = 0.0, name: str = "distillation", **kwargs):  # fmt: skip
        super().__init__(name=name, **kwargs)
        self.num_classes, self.temperature, self.alpha = num_classes, temperature, alpha
        self.label_smoothing = label_smoothing
        self._ce = keras.losses.CategoricalCrossentropy(
            label_smoothing=label_smoothing, reduction=keras.losses.Reduction.NONE
        )

    def call(self, y_true, y_pred):
        n = self.num_classes
        ce = self._ce(y_true[..., :n], y_pred)
        if y_true.shape[-1] == n:  # known while tracing: evaluation on plain labels
            return ce

        def with_teacher():
            teacher = soften(y_true[..., n:], self.temperature)
            student = soften(y_pred, self.temperature)
            kl = tf.reduce_sum(
                teacher * (tf.math.log(tf.clip_by_value(teacher, EPS, 1.0))
                           - tf.math.log(tf.clip_by_value(student, EPS, 1.0))), axis=-1)  # fmt: skip
            return (1 - self.alpha) * ce + self.alpha * self.temperature**2 * kl

        # the width may be unknown while tracing (Keras' evaluate): decide at run time
        return tf.cond(tf.shape(y_true)[-1] > n, with_teacher, lambda: ce)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes,
                "temperature": self.temperature, "alpha": self.alpha,
                "label_smoothing": self.label_smoothing}  # fmt: skip


def label_accuracy(num_classes: int):
    """Categorical accuracy on the label half of ``[one-hot | teacher]`` targets."""

    def accuracy(y_true, y_pred):
        return keras.metrics.categorical_accuracy(y_true[..., :num_classes], y_pred)

    return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


def with_teacher(ds, teacher):
    """Batches ``(x, one-hot)`` → ``(x, [one-hot | teacher(x)])`` (teacher in inference)."""

    def add(x, y):
        return x, tf.concat([y, tf.cast(teacher(x, training=False), y.dtype)], axis=-1)

    return ds.map(add, num_parallel_calls=1)
