"""Lab 03: neural networks in PyTorch and Keras - the same MLP and CNN side by side, training choices compared, a tiny self-attention model."""

from __future__ import annotations

import time

import numpy as np

from cloud.labkit import plots
from cloud.ml.data import digits_split, pointer_sequences
from cloud.ml.models import (
    build_keras_cnn,
    build_keras_mlp,
    build_torch_attention_classifier,
    build_torch_cnn,
    build_torch_mlp,
)
from cloud.ml.training import (
    KERAS_CNN_FILE,
    fit_torch,
    keras_accuracy,
    limit_threads,
    load_torch_cnn,
    predict_accuracy,
    save_keras_model,
    save_torch_model,
    tensorflow_device,
    torch_accuracy,
    torch_device,
    train_keras,
    train_torch,
)

# Imported inside the functions that use them, to keep this module quick to import: keras, torch.

TITLE = "Neural networks in PyTorch and TensorFlow: MLP, CNN, training choices, self-attention"
DEFAULTS = {
    "seed": 42,
    "epochs": 15,  # MLP and CNN training epochs (both frameworks)
    "compare_epochs": 15,  # epochs for each variant in the comparison table
    "attention_sequences": 6000,  # training sequences for the self-attention task
    "attention_epochs": 8,
    "threads": 1,  # CPU threads for torch and TensorFlow (raise it on a free multi-core machine)
}
QUICK = {"compare_epochs": 6, "attention_sequences": 3000, "attention_epochs": 4}

# The comparison: one change at a time against the baseline MLP (ReLU, Adam, cross-entropy).
VARIANTS = [
    ("baseline: ReLU, Adam, cross-entropy", {}, {}),
    ("activation tanh", {"activation": "tanh"}, {}),
    ("activation sigmoid", {"activation": "sigmoid"}, {}),
    ("loss MSE on softmax", {}, {"loss": "mse"}),
    ("optimizer SGD + momentum 0.9", {}, {"optimizer": "sgd", "lr": 0.03}),
    ("optimizer RMSProp", {}, {"optimizer": "rmsprop", "lr": 1e-3}),
    ("dropout 0.3", {"dropout": 0.3}, {}),
    ("batch norm", {"batch_norm": True}, {}),
    ("weight decay 1e-3", {}, {"weight_decay": 1e-3}),
]


def side_by_side(ctx, split) -> dict:
    """Train the kit's MLP and CNN in PyTorch and in Keras; table, curves, and the trained CNNs."""
    ctx.step("2. The same MLP and CNN in PyTorch and in Keras")
    epochs, seed = ctx.args["epochs"], ctx.seed
    rows, curves, models = [], {}, {}

    def timed(train):
        """Run train() and return (its result, seconds taken)."""
        start = time.perf_counter()
        result = train()
        return result, time.perf_counter() - start

    torch_mlp = seeded(build_torch_mlp, seed)
    history, seconds = timed(lambda: fit_torch(torch_mlp, split.x_train, split.y_train, split.x_val,
                                               split.y_val, epochs=epochs, seed=seed))
    rows.append(["PyTorch", "MLP", _torch_params(torch_mlp),
                 predict_accuracy(torch_mlp, split.x_test, split.y_test), seconds])
    curves["PyTorch MLP"] = history

    torch_cnn = seeded(build_torch_cnn, seed)
    history, seconds = timed(lambda: train_torch(torch_cnn, split, epochs=epochs, seed=seed))
    rows.append(["PyTorch", "CNN", _torch_params(torch_cnn),
                 torch_accuracy(torch_cnn, split.x_test, split.y_test), seconds])
    curves["PyTorch CNN"] = history
    models["torch_cnn"] = torch_cnn

    keras_mlp = seeded(build_keras_mlp, seed, framework="keras")
    history, seconds = timed(lambda: train_keras(keras_mlp, split, epochs=epochs, lr=3e-3,
                                                 batch_size=32, seed=seed))
    rows.append(["Keras", "MLP", keras_mlp.count_params(),
                 keras_accuracy(keras_mlp, split.x_test, split.y_test), seconds])
    curves["Keras MLP"] = history

    keras_cnn = seeded(build_keras_cnn, seed, framework="keras")
    history, seconds = timed(lambda: train_keras(keras_cnn, split, epochs=epochs, lr=3e-3,
                                                 batch_size=32, seed=seed))
    rows.append(["Keras", "CNN", keras_cnn.count_params(),
                 keras_accuracy(keras_cnn, split.x_test, split.y_test), seconds])
    curves["Keras CNN"] = history
    models["keras_cnn"] = keras_cnn

    ctx.table(f"Digits test split ({len(split.y_test)} images), {epochs} epochs, Adam, batch 32",
              ["framework", "model", "parameters", "test accuracy", "seconds"], rows)
    ctx.save_plot(plots.curves({name: h.val_accuracy for name, h in curves.items()},
                               "epoch", "validation accuracy", "Training curves: validation accuracy"),
                  "training_curves")
    ctx.save_plot(plots.curves({name: h.loss for name, h in curves.items()}, "epoch",
                               "training loss (cross-entropy)", "Training curves: loss", logy=True),
                  "loss_curves")
    metrics = {f"{r[0].lower()}_{r[1].lower()}_accuracy": r[3] for r in rows}
    return metrics, models


def seeded(build, seed: int, *args, framework: str = "torch", **kwargs):
    """Seed the framework's random generator, then build: initial weights follow from the seed."""
    if framework == "torch":
        import torch

        torch.manual_seed(seed)
    else:
        import keras

        keras.utils.set_random_seed(seed)
    return build(*args, **kwargs)


def _torch_params(model) -> int:
    """Number of trainable parameters of a torch model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def compare_choices(ctx, split) -> dict:
    """Train the MLP once per variant (activation, loss, optimizer, regularisation) and tabulate."""
    ctx.step("3. Training choices, one at a time (PyTorch MLP)")
    rows, metrics = [], {}
    for name, model_kwargs, train_kwargs in VARIANTS:
        model = seeded(build_torch_mlp, ctx.seed, **model_kwargs)
        settings = {"epochs": ctx.args["compare_epochs"], "lr": 3e-3, "seed": ctx.seed, **train_kwargs}
        start = time.perf_counter()
        history = fit_torch(model, split.x_train, split.y_train, split.x_val, split.y_val, **settings)
        accuracy = predict_accuracy(model, split.x_test, split.y_test)
        rows.append([name, history.loss[-1], history.val_accuracy[-1], accuracy,
                     time.perf_counter() - start])
        metrics[f"variant_{name.split(':')[0].replace(' ', '_').replace('.', '')}"] = accuracy
    ctx.table(f"MLP variants, {ctx.args['compare_epochs']} epochs each",
              ["variant", "final train loss", "val accuracy", "test accuracy", "seconds"], rows)
    ctx.console.print("(the MSE row's loss is on another scale: squared error of probabilities)")
    return metrics


def save_models(ctx, models, split) -> dict:
    """Save both CNNs where lab 04 looks for them, and a copy in the run folder; reload to check."""
    import keras


    ctx.step("4. Save the trained CNNs for export (lab 04) and the edge")
    shared = ctx.settings.artifacts_dir / "lab-03"
    for folder in (shared, ctx.run.path / "models"):
        torch_path = save_torch_model(models["torch_cnn"].cpu(), folder)
        keras_path = save_keras_model(models["keras_cnn"], folder)
        ctx.console.print(f"saved {torch_path} and {keras_path}")
    torch_reloaded = torch_accuracy(load_torch_cnn(shared), split.x_test, split.y_test)
    keras_reloaded = keras_accuracy(keras.models.load_model(shared / KERAS_CNN_FILE),
                                    split.x_test, split.y_test)
    ctx.console.print(f"reloaded from {shared}: PyTorch CNN {torch_reloaded:.4f}, "
                      f"Keras CNN {keras_reloaded:.4f} test accuracy")
    return {"reloaded_torch_cnn_accuracy": torch_reloaded,
            "reloaded_keras_cnn_accuracy": keras_reloaded, "artifacts": str(shared)}


def attention(ctx) -> dict:
    """A one-head self-attention layer learns to read the token a pointer names."""
    ctx.step("5. Attention: a tiny self-attention layer on token sequences")
    length, values = 8, 10
    x_train, y_train, vocab = pointer_sequences(ctx.args["attention_sequences"], length, values,
                                                seed=ctx.seed)
    x_val, y_val, _ = pointer_sequences(1000, length, values, seed=ctx.seed + 1)
    x_test, y_test, _ = pointer_sequences(2000, length, values, seed=ctx.seed + 2)
    ctx.console.print(f"task: {len(x_train)} sequences of {length} tokens; the first token says "
                      f"'look at position p', the label is the value at p (chance {1 / values:.0%}). "
                      f"Example: {x_train[0].tolist()} -> {y_train[0]}")
    model = seeded(build_torch_attention_classifier, ctx.seed, vocab, length, values)
    history = fit_torch(model, x_train, y_train, x_val, y_val, epochs=ctx.args["attention_epochs"],
                        lr=3e-3, batch_size=64, seed=ctx.seed, device="cpu")
    accuracy = predict_accuracy(model, x_test, y_test)
    # Where does position 0 look? Average attention weight on the position the pointer names.
    pointer = x_test[:, 0] - values  # N_test
    weights = model.last_weights.numpy()  # last batch of predict_accuracy: B, L, L
    tail = pointer[-len(weights):]
    on_target = float(weights[np.arange(len(weights)), 0, tail].mean())

    # The same budget for an MLP on one-hot tokens: it must learn every (pointer, value) pair.
    one_hot = np.eye(vocab, dtype=np.float32)
    mlp = seeded(build_torch_mlp, ctx.seed, inputs=length * vocab, num_classes=values)
    flat = [one_hot[x].reshape(len(x), -1) for x in (x_train, x_val, x_test)]  # N, L * vocab
    mlp_history = fit_torch(mlp, flat[0], y_train, flat[1], y_val, epochs=ctx.args["attention_epochs"],
                            lr=3e-3, batch_size=64, seed=ctx.seed, device="cpu")
    mlp_accuracy = predict_accuracy(mlp, flat[2], y_test)
    ctx.table(f"Pointer task, {ctx.args['attention_epochs']} epochs, {len(x_test)} test sequences",
              ["model", "parameters", "test accuracy"],
              [["self-attention (1 layer, 1 head, d=32)", _torch_params(model), accuracy],
               ["MLP on one-hot tokens", _torch_params(mlp), mlp_accuracy]])
    ctx.console.print(f"position 0 puts {on_target:.1%} of its attention on the position it points at")
    ctx.save_plot(plots.curves({"self-attention": history.val_accuracy, "MLP": mlp_history.val_accuracy},
                               "epoch", "validation accuracy", "Pointer task"), "attention_curves")
    return {"attention_accuracy": accuracy, "attention_on_target": on_target,
            "attention_mlp_accuracy": mlp_accuracy}


def run(ctx) -> dict:
    """Devices, side-by-side MLP/CNN, choices table, saved CNNs, attention."""
    ctx.step("1. Devices")
    limit_threads(ctx.args["threads"])
    devices = {"torch_device": torch_device(), "tensorflow_device": tensorflow_device()}
    ctx.console.print(f"PyTorch runs on {devices['torch_device']}, TensorFlow on "
                      f"{devices['tensorflow_device']}; {ctx.args['threads']} CPU thread(s)")
    split = digits_split(ctx.seed)
    metrics, models = side_by_side(ctx, split)
    metrics.update(compare_choices(ctx, split))
    metrics.update(save_models(ctx, models, split))
    metrics.update(attention(ctx))
    return {**devices, **metrics}
