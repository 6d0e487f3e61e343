"""Training loops for the kit's models in PyTorch and Keras, and where trained models are kept."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloud.ml.data import DigitsSplit, as_images
from cloud.ml.models import build_torch_cnn

# Imported inside the functions that use them, to keep this module quick to import: keras, tensorflow, torch.

TORCH_CNN_FILE = "digits_cnn.pt"
KERAS_CNN_FILE = "digits_cnn.keras"


@dataclass
class History:
    """Per-epoch training loss and validation accuracy."""
    loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)


def torch_device(prefer: str = "auto") -> str:
    """'cuda' when a GPU is present (and not refused), else 'cpu'."""
    import torch

    if prefer == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def train_torch(
    model,
    split: DigitsSplit,
    epochs: int = 15,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 42,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    device: str = "auto",
    image: bool = True,
) -> History:
    """Train a torch classifier on the digits split with cross-entropy; returns its history."""
    shape = as_images if image else (lambda x: x)
    return fit_torch(model, shape(split.x_train), split.y_train, shape(split.x_val), split.y_val,
                     epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, optimizer=optimizer,
                     weight_decay=weight_decay, device=device)


def torch_predict(model, x: np.ndarray, image: bool = True) -> np.ndarray:
    """Logits of a torch model on flat digits (N, 64), as numpy."""
    import torch

    model.eval()
    dev = next(model.parameters()).device
    inputs = torch.from_numpy(as_images(x) if image else x).to(dev)
    with torch.no_grad():
        return model(inputs).cpu().numpy()


def torch_accuracy(model, x: np.ndarray, y: np.ndarray, image: bool = True) -> float:
    """Top-1 accuracy of a torch model on flat digits."""
    return float((torch_predict(model, x, image).argmax(1) == y).mean())


def train_keras(model, split: DigitsSplit, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
                seed: int = 42, optimizer: str = "adam") -> History:
    """Compile and fit a Keras classifier (logits output) on the digits split."""
    import keras

    keras.utils.set_random_seed(seed)
    opt = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD,
           "rmsprop": keras.optimizers.RMSprop}[optimizer](learning_rate=lr)
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    fit = model.fit(
        as_images(split.x_train, "NHWC"), split.y_train,
        validation_data=(as_images(split.x_val, "NHWC"), split.y_val),
        epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True,
    )
    return History(loss=[float(v) for v in fit.history["loss"]],
                   val_accuracy=[float(v) for v in fit.history["val_accuracy"]])


def keras_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a Keras model on flat digits."""
    logits = model.predict(as_images(x, "NHWC"), verbose=0)
    return float((logits.argmax(1) == y).mean())


def save_torch_model(model, folder: Path) -> Path:
    """Save a torch model's state dict as digits_cnn.pt in folder."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TORCH_CNN_FILE
    torch.save(model.state_dict(), path)
    return path


def load_torch_cnn(folder: Path):
    """Rebuild the kit's CNN and load digits_cnn.pt from folder."""
    import torch


    model = build_torch_cnn()
    model.load_state_dict(torch.load(folder / TORCH_CNN_FILE, map_location="cpu"))
    model.eval()
    return model


LOSSES = ("cross_entropy", "mse")


def fit_torch(model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              epochs: int = 15, lr: float = 3e-3, batch_size: int = 32, seed: int = 42,
              optimizer: str = "adam", weight_decay: float = 0.0, loss: str = "cross_entropy",
              device: str = "auto") -> History:
    """Train a torch classifier on any arrays (images, flat vectors, token sequences).

    loss="cross_entropy" is the usual choice for logits; loss="mse" compares softmax
    probabilities with one-hot targets, to show why cross-entropy is preferred.
    """
    import torch
    from torch import nn

    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    torch.manual_seed(seed)
    dev = torch_device(device)
    model.to(dev)
    x = torch.from_numpy(x_train).to(dev)
    y = torch.from_numpy(y_train).to(dev)
    make = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
    kwargs = {"momentum": 0.9} if optimizer == "sgd" else {}
    opt = make[optimizer](model.parameters(), lr=lr, weight_decay=weight_decay, **kwargs)
    cross_entropy = nn.CrossEntropyLoss()

    def loss_fn(logits, target):  # logits B, K; target B
        if loss == "cross_entropy":
            return cross_entropy(logits, target)
        one_hot = nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype)  # B, K
        return ((logits.softmax(dim=1) - one_hot) ** 2).sum(dim=1).mean()

    generator = torch.Generator().manual_seed(seed)
    history = History()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator).to(dev)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            batch_loss = loss_fn(model(x[idx]), y[idx])
            batch_loss.backward()
            opt.step()
            total += batch_loss.item() * len(idx)
        history.loss.append(total / len(x))
        history.val_accuracy.append(predict_accuracy(model, x_val, y_val))
    return history


def predict_accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
    """Top-1 accuracy of a torch classifier on any input array (no reshaping)."""
    import torch

    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(torch.from_numpy(x[start : start + batch_size]).to(dev))  # B, K
            correct += int((logits.argmax(1).cpu().numpy() == y[start : start + batch_size]).sum())
    return correct / len(x)


def tensorflow_device() -> str:
    """'GPU' when TensorFlow sees one, else 'CPU' (imports TensorFlow quietly)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def limit_threads(threads: int = 1) -> None:
    """Cap torch and TensorFlow CPU threads (small models on shared cores run faster this way)."""
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already started in this process; its thread pools are fixed now


def save_keras_model(model, folder: Path) -> Path:
    """Save a Keras model as digits_cnn.keras in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KERAS_CNN_FILE
    model.save(path)
    return path
