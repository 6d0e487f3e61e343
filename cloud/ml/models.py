"""Model definitions shared by the labs, export, federated training and privacy (torch and Keras)."""

from __future__ import annotations

import math

# Imported inside the functions that use them, to keep this module quick to import: keras, torch.

# Heavy frameworks are imported inside functions so `import cloud.ml.models` stays cheap.


def build_torch_cnn(num_classes: int = 10):
    """The kit's digit CNN in PyTorch: input B x 1 x 8 x 8 in [0, 1], output B x 10 logits."""
    from torch import nn

    class DigitsCNN(nn.Module):
        """Two 3x3 convolutions, a 2x2 max-pool and two dense layers (about 38k parameters)."""
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(32 * 4 * 4, 64)
            self.fc2 = nn.Linear(64, num_classes)
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.relu(self.conv1(x))  # B, 16, 8, 8
            x = self.relu(self.conv2(x))  # B, 32, 8, 8
            x = self.pool(x)  # B, 32, 4, 4
            x = x.flatten(1)  # B, 512
            x = self.relu(self.fc1(x))  # B, 64
            return self.fc2(x)  # B, 10

    return DigitsCNN()


def build_keras_cnn(num_classes: int = 10):
    """The same CNN in Keras: input B x 8 x 8 x 1 (NHWC) in [0, 1], output B x 10 logits."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),  # B, 8, 8, 16
            layers.Conv2D(32, 3, padding="same", activation="relu"),  # B, 8, 8, 32
            layers.MaxPooling2D(2),  # B, 4, 4, 32
            layers.Flatten(),  # B, 512
            layers.Dense(64, activation="relu"),  # B, 64
            layers.Dense(num_classes),  # B, 10 logits
        ],
        name="digits_cnn",
    )


ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")


def build_torch_mlp(hidden: tuple[int, ...] = (128, 64), activation: str = "relu",
                    dropout: float = 0.0, batch_norm: bool = False, num_classes: int = 10,
                    inputs: int = 64):
    """A multilayer perceptron in PyTorch: input B x 64 (flat digits), output B x 10 logits.

    Each hidden block is Linear -> [BatchNorm] -> activation -> [Dropout].
    """
    from torch import nn

    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    make_activation = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
    layers, width = [], inputs
    for size in hidden:
        layers.append(nn.Linear(width, size))  # B, size
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(make_activation[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))  # B, 10 logits
    return nn.Sequential(*layers)


def build_keras_mlp(hidden: tuple[int, ...] = (128, 64), activation: str = "relu",
                    dropout: float = 0.0, batch_norm: bool = False, num_classes: int = 10):
    """The same MLP in Keras. Input B x 8 x 8 x 1 (NHWC, like the CNN), flattened first; logits out."""
    import keras
    from keras import layers

    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    stack = [keras.Input(shape=(8, 8, 1)), layers.Flatten()]  # B, 64
    for size in hidden:
        stack.append(layers.Dense(size))  # B, size
        if batch_norm:
            stack.append(layers.BatchNormalization())
        stack.append(layers.Activation(activation))
        if dropout > 0:
            stack.append(layers.Dropout(dropout))
    stack.append(layers.Dense(num_classes))  # B, 10 logits
    return keras.Sequential(stack, name="digits_mlp")


def build_torch_attention_classifier(vocab: int, length: int, num_classes: int, dim: int = 32):
    """A one-layer, one-head self-attention model for token sequences (B x L ints -> B x classes).

    Token and position embeddings are added; one self-attention layer (queries, keys and
    values from the same sequence) with a residual connection; the first position's output
    is read out, like a transformer's [CLS] token.
    """
    import torch
    from torch import nn

    class TinySelfAttention(nn.Module):
        """softmax(Q K^T / sqrt(d)) V over one sequence, then a linear read-out of position 0."""
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(vocab, dim)
            self.positions = nn.Embedding(length, dim)
            self.query = nn.Linear(dim, dim)
            self.key = nn.Linear(dim, dim)
            self.value = nn.Linear(dim, dim)
            self.norm = nn.LayerNorm(dim)
            self.readout = nn.Linear(dim, num_classes)
            self.last_weights = None  # B, L, L attention weights of the latest forward pass

        def forward(self, x):
            where = torch.arange(x.shape[1], device=x.device)  # L
            h = self.tokens(x) + self.positions(where)  # B, L, dim
            q, k, v = self.query(h), self.key(h), self.value(h)  # B, L, dim each
            scores = q @ k.transpose(1, 2) / math.sqrt(dim)  # B, L, L
            weights = scores.softmax(dim=-1)  # B, L, L; each row sums to 1
            self.last_weights = weights.detach()
            h = self.norm(h + weights @ v)  # B, L, dim
            return self.readout(h[:, 0])  # B, classes

    return TinySelfAttention()
