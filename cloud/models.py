"""Model definitions shared by the labs, export, federated training and privacy (torch and Keras)."""

from __future__ import annotations

# Heavy frameworks are imported inside functions so `import cloud.models` stays cheap.


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
