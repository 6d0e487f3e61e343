"""Lab 01: the ML lifecycle - look at the data, watch gradient descent, train, evaluate, save, reload."""

from __future__ import annotations

import numpy as np

from cloud.labkit import plots
from cloud.ml import gradients as gd
from cloud.ml.data import digits_split, load_dataset
from cloud.ml.evaluation import classification_scores
from cloud.ml.lifecycle import load_model, make_untidy, save_model, tabular_pipeline

# Imported inside the functions that use them, to keep this module quick to import: sklearn.

TITLE = "The ML lifecycle: explore, gradient descent by hand, train, save and reload"
DEFAULTS = {
    "seed": 42,
    "dataset": "breast_cancer",  # lifecycle table: breast_cancer, wine, iris or digits
    "steps": 2000,  # gradient-descent steps
    "lr": 0.1,  # gradient-descent learning rate
    "missing": 0.05,  # fraction of cells blanked out in the untidy table
}
QUICK = {"steps": 300}


def explore(ctx) -> dict:
    """Summary table, class balance and plots for digits and for the lifecycle table."""
    ctx.step("1. Explore: what is in the data?")
    digits = load_dataset("digits")
    table = load_dataset(ctx.args["dataset"])
    ctx.table("Data sets", ["name", "rows", "features", "task", "what"],
              [[t.name, t.shape[0], t.shape[1], t.task, t.description] for t in (digits, table)])
    counts = table.target.value_counts().sort_index()
    names = table.target_names
    ctx.table(f"Class balance: {table.name}", ["class", "rows", "share"],
              [[names[int(k)], int(v), f"{v / counts.sum():.1%}"] for k, v in counts.items()])
    split = digits_split(ctx.seed)
    ctx.save_plot(plots.digit_grid(split.x_train, split.y_train, title="digits: training images"),
                  "digits_grid")
    columns = table.frame.columns[: min(8, table.shape[1])].tolist()
    labels = table.target.map(lambda k: names[int(k)])
    ctx.save_plot(plots.feature_histograms(table.frame, columns, hue=labels,
                                           title=f"{table.name}: first features by class"),
                  "feature_histograms")
    ctx.save_plot(plots.correlation_heatmap(table.frame, title=f"{table.name}: correlations"),
                  "correlation_heatmap")
    return {"digits_rows": digits.shape[0], "table_rows": table.shape[0],
            "minority_share": float(counts.min() / counts.sum())}


def gradients(ctx) -> dict:
    """Gradient descent in numpy for linear and logistic regression, checked two ways."""
    from sklearn.preprocessing import StandardScaler


    ctx.step("2. Gradient descent by hand, checked against autograd and finite differences")
    diabetes = load_dataset("diabetes")
    x_lin = gd.add_bias(StandardScaler().fit_transform(diabetes.frame.to_numpy()))  # 442, 11
    y_lin = diabetes.target.to_numpy(dtype=np.float64)
    y_lin = (y_lin - y_lin.mean()) / y_lin.std()  # standardised target: loss 1.0 = predicting the mean
    cancer = load_dataset("breast_cancer")
    x_log = gd.add_bias(StandardScaler().fit_transform(cancer.frame.to_numpy()))  # 569, 31
    y_log = cancer.target.to_numpy(dtype=np.float64)

    steps, lr = ctx.args["steps"], ctx.args["lr"]
    linear = gd.gradient_descent("linear", x_lin, y_lin, lr=lr, steps=steps, seed=ctx.seed)
    logistic = gd.gradient_descent("logistic", x_log, y_log, lr=lr, steps=steps, seed=ctx.seed)
    best_theta = np.linalg.lstsq(x_lin, y_lin, rcond=None)[0]  # the closed-form optimum
    best_linear = gd.loss("linear", best_theta, x_lin, y_lin)
    train_accuracy = float(((x_log @ logistic.theta > 0) == y_log).mean())

    # Check at a random point (not at the optimum, where every gradient is near zero).
    rng = np.random.default_rng(ctx.seed)
    checks = [gd.check_gradient("linear", rng.normal(size=x_lin.shape[1]), x_lin, y_lin),
              gd.check_gradient("logistic", rng.normal(size=x_log.shape[1]), x_log, y_log)]
    ctx.table("Gradient checks (float64, max |difference|)",
              ["model", "|grad|", "vs torch autograd", "vs finite differences"],
              [[c.model, c.norm, f"{c.vs_autograd:.1e}", f"{c.vs_finite_difference:.1e}"]
               for c in checks])
    ctx.table(f"Gradient descent, {steps} steps, lr={lr}",
              ["model", "data", "first loss", "last loss", "reference"],
              [["linear (MSE)", "diabetes", linear.losses[0], linear.losses[-1],
                f"least squares {best_linear:.4f}"],
               ["logistic (cross-entropy)", "breast_cancer", logistic.losses[0],
                logistic.losses[-1], f"train accuracy {train_accuracy:.3f}"]])
    ctx.save_plot(plots.curves({"linear: MSE (diabetes)": linear.losses,
                                "logistic: cross-entropy (breast_cancer)": logistic.losses},
                               "step", "loss", "Gradient descent loss", logy=True), "loss_curve")
    return {
        "grad_linear_vs_autograd": checks[0].vs_autograd,
        "grad_linear_vs_fd": checks[0].vs_finite_difference,
        "grad_logistic_vs_autograd": checks[1].vs_autograd,
        "grad_logistic_vs_fd": checks[1].vs_finite_difference,
        "gd_linear_first_loss": linear.losses[0],
        "gd_linear_last_loss": linear.losses[-1],
        "least_squares_loss": best_linear,
        "gd_logistic_first_loss": logistic.losses[0],
        "gd_logistic_last_loss": logistic.losses[-1],
        "gd_logistic_train_accuracy": train_accuracy,
    }


def lifecycle(ctx) -> dict:
    """Split, preprocess, train, evaluate, save with metrics, reload and predict."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split


    ctx.step("3. The lifecycle: split, preprocess, train, evaluate, save, reload, predict")
    table = load_dataset(ctx.args["dataset"])
    frame = make_untidy(table.frame, seed=ctx.seed, missing_fraction=ctx.args["missing"])
    missing = int(frame.isna().sum().sum())
    ctx.console.print(f"untidy table: {frame.shape[0]} rows, {missing} missing cells, "
                      f"a text column 'site' with values {sorted(frame['site'].unique())}")
    x_train, x_test, y_train, y_test = train_test_split(
        frame, table.target.to_numpy(), test_size=0.25, stratify=table.target, random_state=ctx.seed)
    numeric = table.frame.columns.tolist()
    pipeline = tabular_pipeline(numeric, ["site"], LogisticRegression(max_iter=2000))
    pipeline.fit(x_train, y_train)  # imputer medians and scaler means come from train only

    proba = pipeline.predict_proba(x_test)  # N_test, classes
    predicted = pipeline.predict(x_test)
    scores = classification_scores(y_test, predicted, proba[:, 1] if proba.shape[1] == 2 else proba)
    ctx.table(f"Logistic regression on untidy {table.name} (test split, {len(y_test)} rows)",
              list(scores), [list(scores.values())])

    folder = ctx.run.path / "model"
    card = save_model(pipeline, folder, f"{table.name}_logreg", frame.columns.tolist(),
                      list(pipeline.classes_), scores)
    reloaded, _ = load_model(folder, card.name)
    agrees = bool((reloaded.predict(x_test) == predicted).all())
    ctx.console.print(f"saved {folder / card.file} (sha256 {card.sha256[:12]}...) with "
                      f"{card.name}.json; reloaded model agrees on every test row: {agrees}")
    new_rows = x_test.head(3)
    names = table.target_names
    ctx.table("Reloaded model on three rows it never saw in training", ["row", "site", "predicted", "true"],
              [[int(i), r["site"], names[int(p)], names[int(t)]]
               for (i, r), p, t in zip(new_rows.iterrows(), reloaded.predict(new_rows), y_test[:3])])
    return {"missing_cells": missing, **{f"lifecycle_{k}": v for k, v in scores.items()},
            "reload_agrees": agrees, "model_sha256": card.sha256}


def run(ctx) -> dict:
    """Explore, then gradients, then the lifecycle; returns every number printed."""
    metrics = {}
    metrics.update(explore(ctx))
    metrics.update(gradients(ctx))
    metrics.update(lifecycle(ctx))
    return metrics
