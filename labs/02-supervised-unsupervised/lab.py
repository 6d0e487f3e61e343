"""Lab 02: supervised and unsupervised learning with scikit-learn - regression, classification, imbalance, clustering, anomalies."""

from __future__ import annotations

import numpy as np

from cloud.labkit import plots
from cloud.ml.classical import class_scores, classifiers, random_oversample, random_undersample, regressors, skewed
from cloud.ml.data import DIGITS_LABELS, FAULT_KINDS, digits_split, faulty_frames, load_dataset
from cloud.ml.evaluation import classification_scores, micro_roc

# Imported inside the functions that use them, to keep this module quick to import: sklearn.

TITLE = "Supervised and unsupervised learning: regression, classification, imbalance, clustering, anomalies"
DEFAULTS = {
    "seed": 42,
    "folds": 5,  # cross-validation folds (regression and imbalance)
    "boosting_rounds": 100,  # gradient boosting iterations
    "trees": 200,  # random forest size
    "tsne_points": 1797,  # digits shown in the t-SNE plot (t-SNE is the slow step)
    "minority_share": 0.05,  # share of malignant rows kept in the imbalanced set
    "anomalies": 60,  # faulty frames planted among the test digits
}
QUICK = {"folds": 3, "boosting_rounds": 30, "trees": 60, "tsne_points": 400}


def regression(ctx) -> dict:
    """Cross-validated RMSE/MAE of six regressors on diabetes; a validation curve over polynomial degree."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_validate, validation_curve
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures


    ctx.step("1. Regression: diabetes progression, cross-validated")
    table = load_dataset("diabetes")
    x, y = table.frame.to_numpy(), table.target.to_numpy()
    folds = KFold(ctx.args["folds"], shuffle=True, random_state=ctx.seed)
    rows, results = [], {}
    for name, model in regressors(ctx.seed).items():
        cv = cross_validate(model, x, y, cv=folds, return_train_score=True,
                            scoring=("neg_root_mean_squared_error", "neg_mean_absolute_error"))
        rmse = -cv["test_neg_root_mean_squared_error"].mean()
        results[name] = rmse
        rows.append([name, -cv["train_neg_root_mean_squared_error"].mean(), rmse,
                     cv["test_neg_root_mean_squared_error"].std(), -cv["test_neg_mean_absolute_error"].mean()])
    ctx.table(f"Diabetes, {ctx.args['folds']}-fold CV (target range 25-346)",
              ["model", "train RMSE", "CV RMSE", "± (folds)", "CV MAE"], rows)

    # Bias and variance made visible: a noisy sine fitted by polynomials of growing degree.
    rng = np.random.default_rng(ctx.seed)
    x_wave = rng.uniform(0, 1, size=(30, 1))  # 30, 1
    y_wave = np.sin(2 * np.pi * x_wave[:, 0]) + rng.normal(0, 0.3, size=30)
    degrees = list(range(1, 13))
    model = make_pipeline(PolynomialFeatures(), LinearRegression())
    train, valid = validation_curve(model, x_wave, y_wave, param_name="polynomialfeatures__degree",
                                    param_range=degrees, cv=KFold(5, shuffle=True, random_state=ctx.seed),
                                    scoring="neg_root_mean_squared_error")
    train_rmse, valid_rmse = -train.mean(axis=1), -valid.mean(axis=1)
    best = degrees[int(np.argmin(valid_rmse))]
    ctx.table("Validation curve: 30 noisy points of a sine (noise sd 0.3), 5-fold CV",
              ["polynomial degree", "train RMSE", "validation RMSE"],
              [[d, t, v] for d, t, v in zip(degrees, train_rmse, valid_rmse) if d in (1, 2, best, 8, 12)])
    ctx.console.print(f"best degree {best}: lower degrees underfit (bias), higher ones overfit (variance)")
    fig = plots.xy_curves(degrees, {"train RMSE": train_rmse, "validation RMSE": valid_rmse},
                          "polynomial degree", "RMSE", "Bias (left) and variance (right)")
    fig.axes[0].set_yscale("log")
    ctx.save_plot(fig, "validation_curve")
    return {"rmse_linear": results["linear"], "rmse_ridge": results["ridge"],
            "rmse_lasso": results["lasso"], "rmse_polynomial": results["polynomial (degree 2)"],
            "rmse_best": min(results.values()), "best_degree": best,
            "wave_rmse_degree1": float(valid_rmse[0]), "wave_rmse_best": float(valid_rmse.min()),
            "wave_rmse_degree12": float(valid_rmse[-1])}


def classification(ctx) -> dict:
    """Six classifiers on digits: accuracy, precision, recall, F1, ROC-AUC; ROC and confusion plots."""
    from sklearn.metrics import confusion_matrix


    ctx.step("2. Classification: digits, six model families")
    split = digits_split(ctx.seed)
    x_train = np.vstack([split.x_train, split.x_val])  # no tuning here, so validation joins training
    y_train = np.concatenate([split.y_train, split.y_val])
    rows, rocs, metrics, best = [], {}, {}, (None, -1.0)
    models = classifiers(ctx.seed, ctx.args["boosting_rounds"], ctx.args["trees"])
    for name, model in models.items():
        model.fit(x_train, y_train)
        scores_per_class = class_scores(model, split.x_test)  # N_test, 10
        predicted = scores_per_class.argmax(axis=1)
        scores = classification_scores(split.y_test, predicted, scores_per_class)
        rows.append([name, *scores.values()])
        rocs[name] = micro_roc(split.y_test, scores_per_class)
        metrics[f"acc_{name.split(' (')[0].replace(' ', '_').replace('-', '').lower()}"] = scores["accuracy"]
        if scores["accuracy"] > best[1]:
            best = (name, scores["accuracy"], predicted)
    ctx.table(f"Digits test split ({len(split.y_test)} images), macro averages",
              ["model", "accuracy", "precision", "recall", "F1", "ROC-AUC (ovr)"], rows)
    ctx.save_plot(plots.roc_plot(rocs, "Digits: micro-averaged ROC (one-vs-rest)"), "roc")
    matrix = confusion_matrix(split.y_test, best[2])
    ctx.save_plot(plots.confusion_plot(matrix, DIGITS_LABELS, f"Confusion matrix: {best[0]}"),
                  "confusion_matrix")
    return {**metrics, "best_classifier": best[0], "best_accuracy": best[1]}


def imbalance(ctx) -> dict:
    """A rare-malignant version of breast cancer: plain vs class weights vs over- and under-sampling."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, precision_score, recall_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler


    ctx.step("3. Imbalanced data: malignant made rare")
    table = load_dataset("breast_cancer")
    malignant = (table.target.to_numpy() == 0).astype(int)  # 1 = malignant, the rare class
    x, y = skewed(table.frame.to_numpy(), malignant, minority=1, share=ctx.args["minority_share"],
                  seed=ctx.seed)
    ctx.console.print(f"{len(y)} rows, {y.sum()} malignant ({y.mean():.1%}); "
                      f"{ctx.args['folds']}-fold stratified CV, resampling inside each training fold only")
    strategies = {
        "plain": (None, lambda a, b: (a, b)),
        "class weights": ("balanced", lambda a, b: (a, b)),
        "random oversampling": (None, lambda a, b: random_oversample(a, b, ctx.seed)),
        "random undersampling": (None, lambda a, b: random_undersample(a, b, ctx.seed)),
    }
    folds = StratifiedKFold(ctx.args["folds"], shuffle=True, random_state=ctx.seed)
    rows, metrics = [], {}
    for name, (weights, resample) in strategies.items():
        predicted = np.zeros_like(y)
        for train_idx, test_idx in folds.split(x, y):
            x_fit, y_fit = resample(x[train_idx], y[train_idx])
            model = make_pipeline(StandardScaler(),
                                  LogisticRegression(C=0.1, class_weight=weights, max_iter=3000))
            predicted[test_idx] = model.fit(x_fit, y_fit).predict(x[test_idx])
        recall, f1 = recall_score(y, predicted), f1_score(y, predicted)
        rows.append([name, recall, precision_score(y, predicted, zero_division=0), f1])
        key = {"plain": "plain", "class weights": "weighted",
               "random oversampling": "oversampled", "random undersampling": "undersampled"}[name]
        metrics[f"imbalance_recall_{key}"], metrics[f"imbalance_f1_{key}"] = recall, f1
    ctx.table("Rare malignant class: out-of-fold predictions", ["strategy", "recall", "precision", "F1"], rows)
    return metrics


def unsupervised(ctx) -> dict:
    """k-means, hierarchical and DBSCAN on blobs and moons; PCA and t-SNE of digits; Isolation Forest."""
    from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
    from sklearn.datasets import make_blobs, make_moons
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.manifold import TSNE
    from sklearn.metrics import adjusted_rand_score, roc_auc_score
    from sklearn.preprocessing import StandardScaler


    ctx.step("4. Unsupervised: clustering, projections, anomaly detection")
    shapes = {
        "blobs": make_blobs(400, centers=3, cluster_std=1.0, random_state=ctx.seed),
        "moons": make_moons(400, noise=0.06, random_state=ctx.seed),
    }
    rows, metrics, panels, colours = [], {}, {}, None
    for shape, (points, truth) in shapes.items():
        points = StandardScaler().fit_transform(points)
        k = len(set(truth))
        found = {
            "k-means": KMeans(k, n_init=10, random_state=ctx.seed).fit_predict(points),
            "hierarchical (single)": AgglomerativeClustering(k, linkage="single").fit_predict(points),
            "DBSCAN": DBSCAN(eps=0.3, min_samples=5).fit_predict(points),
        }
        for method, labels in found.items():
            ari = adjusted_rand_score(truth, labels)
            rows.append([shape, method, len(set(labels) - {-1}), ari])
            metrics[f"ari_{shape}_{method.split(' ')[0].replace('-', '').lower()}"] = ari
    ctx.table("Clustering vs the true groups (adjusted Rand index: 1 = perfect, 0 = chance)",
              ["data", "method", "clusters", "ARI"], rows)

    split = digits_split(ctx.seed)
    x_all = np.vstack([split.x_train, split.x_val, split.x_test])
    y_all = np.concatenate([split.y_train, split.y_val, split.y_test])
    kmeans_digits = KMeans(10, n_init=10, random_state=ctx.seed).fit_predict(x_all)
    metrics["ari_digits_kmeans"] = adjusted_rand_score(y_all, kmeans_digits)
    pca = PCA(n_components=2, random_state=ctx.seed).fit(x_all)
    n = min(ctx.args["tsne_points"], len(x_all))
    panels["PCA (all digits)"] = pca.transform(x_all[:n])  # n, 2
    panels[f"t-SNE ({n} digits)"] = TSNE(2, random_state=ctx.seed, init="pca").fit_transform(x_all[:n])
    colours = y_all[:n]
    ctx.console.print(f"k-means on 64-pixel digits, 10 clusters: ARI {metrics['ari_digits_kmeans']:.3f}; "
                      f"PCA keeps {pca.explained_variance_ratio_.sum():.1%} of the variance in 2-D")
    ctx.save_plot(plots.scatter_panels(panels, colours, "Digits projected to 2-D (colour = true digit)"),
                  "projections")

    # Anomalies: train on clean frames, score test frames with faulty ones planted among them.
    faulty, kinds = faulty_frames(split.x_test, ctx.args["anomalies"], seed=ctx.seed)
    frames = np.vstack([split.x_test, faulty])  # N_test + anomalies, 64
    is_anomaly = np.r_[np.zeros(len(split.x_test)), np.ones(len(faulty))]
    forest = IsolationForest(n_estimators=200, random_state=ctx.seed).fit(split.x_train)
    anomaly_score = -forest.score_samples(frames)  # higher = more isolated = more anomalous
    auc = roc_auc_score(is_anomaly, anomaly_score)
    rows = [["all", len(faulty), auc]]
    for kind in FAULT_KINDS:
        keep = np.r_[np.ones(len(split.x_test), bool), np.array(kinds) == kind]
        rows.append([kind, kinds.count(kind), roc_auc_score(is_anomaly[keep], anomaly_score[keep])])
    ctx.table(f"Isolation Forest: planted faulty frames among {len(split.x_test)} clean test digits",
              ["fault", "planted", "ROC-AUC"], rows)
    return {**metrics, "isolation_forest_auc": auc,
            **{f"isolation_forest_auc_{r[0]}": r[2] for r in rows[1:]}}


def run(ctx) -> dict:
    """Regression, classification, imbalance, then unsupervised learning."""
    metrics = {}
    metrics.update(regression(ctx))
    metrics.update(classification(ctx))
    metrics.update(imbalance(ctx))
    metrics.update(unsupervised(ctx))
    return metrics
