"""A trained model's word vectors: files for TensorBoard's Embedding Projector, each
word's nearest words by cosine, and a t-SNE picture (van der Maaten & Hinton 2008).

Two matrices hold a vector per word: the input embedding [V, E] (what the first layer
reads) and the softmax weight [V, H_L] (what the last layer's output is scored against);
with tied embeddings they are one. The vocabulary's ids are in order of training-set
frequency (`data.build_vocab`), so "the N most frequent words" are ids 0..N-1.
"""

import pathlib

import numpy as np

from lstm_lm import checkpoints, softmax

MATRICES = {
    "input": lambda params: params["embedding"],
    "output": softmax.softmax_weight,
}
NUM_WORDS = 2000  # by default, the files and the picture hold this many words
TSNE_INCHES, TSNE_DPI = 16, 100  # the picture is 1600 x 1600 pixels
TSNE_LABELS = 500  # the picture labels this many of its words, the most frequent


def vectors(params: dict, which: str) -> np.ndarray:
    """[V, D] float32: the `which` ("input" or "output") matrix's row per word."""
    return np.asarray(MATRICES[which](params), np.float32)


def nearest(vectors_VxD: np.ndarray, word_id: int, k: int) -> list[tuple[int, float]]:
    """The `k` words whose vectors have the largest cosine with `word_id`'s (itself left
    out), as (id, cosine), the nearest first."""
    unit_VxD = vectors_VxD / np.maximum(np.linalg.norm(vectors_VxD, axis=1, keepdims=True), 1e-12)
    cosines_V = unit_VxD @ unit_VxD[word_id]
    cosines_V[word_id] = -np.inf
    order = np.argsort(-cosines_V, kind="stable")[:k]
    return [(int(i), float(cosines_V[i])) for i in order]


def write_projector_files(out: pathlib.Path, vectors_NxD: np.ndarray, words: list[str]) -> None:
    """out/vectors.tsv (a row of tab-separated numbers per word) and out/metadata.tsv (the
    words, one per line, in the same order, no header: the format of a one-column label
    file): load both at projector.tensorflow.org, or in TensorBoard's projector.
    checkpoints.WriteFailed when they cannot be written."""
    with checkpoints.writing(out):
        out.mkdir(parents=True, exist_ok=True)
    rows = ("\t".join(f"{x:.6g}" for x in row) for row in vectors_NxD)
    checkpoints.write_text(out / "vectors.tsv", "".join(row + "\n" for row in rows))
    checkpoints.write_text(out / "metadata.tsv", "".join(word + "\n" for word in words))


def tsne_points(vectors_NxD: np.ndarray, seed: int) -> np.ndarray:
    """[N, 2]: scikit-learn's t-SNE of the vectors, by cosine distance, from a PCA start,
    with perplexity 30 (below a third of N for a few words), `seed` its random state."""
    from sklearn.manifold import TSNE  # here: a slow import only this mode needs

    perplexity = min(30.0, (len(vectors_NxD) - 1) / 3)
    tsne = TSNE(2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(vectors_NxD.astype(np.float64))


def write_tsne_picture(path: pathlib.Path, points_Nx2: np.ndarray, words: list[str], title: str):
    """A PNG of TSNE_INCHES * TSNE_DPI pixels square: a dot at each word's t-SNE point,
    the first TSNE_LABELS words (the most frequent) labelled; more would hide each other."""
    import matplotlib  # as in reporting: imported where it is used

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(TSNE_INCHES, TSNE_INCHES), dpi=TSNE_DPI)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.97)
    try:
        ax.scatter(points_Nx2[:, 0], points_Nx2[:, 1], s=3, color="tab:blue", alpha=0.5)
        for (x, y), word in zip(points_Nx2[:TSNE_LABELS], words):
            ax.annotate(word, (x, y), xytext=(2, 2), textcoords="offset points", fontsize=8)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        with checkpoints.writing(path):
            fig.savefig(path)
    finally:
        plt.close(fig)
