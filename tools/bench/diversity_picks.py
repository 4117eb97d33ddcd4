"""Picks from the active-learning literature that aim at coverage rather than doubt, for label_value_probe: do
frames chosen to stand for the whole field teach this model more than random ones where doubt does not (D4)?

- TypiClust (Hacohen et al., ICML 2022): k-means into as many clusters as labels, the most typical frame of each
  (the least mean distance to its nearest neighbours in the cluster); a low-budget pick.
- BADGE (Ash et al., ICLR 2020): k-means++ seeding on the gradient of the loss at the model's own answer with
  respect to the last layer's weights; doubt and diversity at once.
- k-center greedy (Sener and Savarese, ICLR 2018): each next frame the one farthest from those already picked.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

NEIGHBOURS = 20  # TypiClust's typicality: the mean distance to this many nearest neighbours in the cluster


def typical_pick(points: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Per k-means cluster (count of them), the frame with the least mean distance to its nearest neighbours."""
    clusters = KMeans(n_clusters=count, n_init=1, random_state=seed).fit_predict(points)
    chosen = [_most_typical(points, np.flatnonzero(clusters == c)) for c in range(count)]
    return np.sort(np.asarray([c for c in chosen if c is not None]))


def _most_typical(points: np.ndarray, members: np.ndarray) -> int | None:
    if len(members) == 0:
        return None
    if len(members) < 3:
        return int(members[0])
    inside = points[members]
    distance = np.linalg.norm(inside[:, None] - inside[None], axis=2)
    nearest = np.sort(distance, axis=1)[:, 1:min(NEIGHBOURS + 1, len(members))]
    return int(members[np.argmin(nearest.mean(axis=1))])


def gradient_embedding(probability: np.ndarray, features: np.ndarray) -> np.ndarray:
    """BADGE's embedding: (p - onehot(the model's answer)) outer the last hidden layer, flattened."""
    answer = np.eye(probability.shape[1])[probability.argmax(axis=1)]
    return ((probability - answer)[:, :, None] * features[:, None, :]).reshape(len(features), -1)


def badge_pick(embedding: np.ndarray, count: int, seed: int) -> np.ndarray:
    """k-means++ seeding: the largest gradient first, then each next frame drawn with chance ~ squared distance to
    the nearest picked one."""
    rng = np.random.default_rng(seed)
    chosen = [int(np.argmax(np.linalg.norm(embedding, axis=1)))]
    distance = np.sum((embedding - embedding[chosen[0]]) ** 2, axis=1)
    for _ in range(count - 1):
        chosen.append(int(rng.choice(len(embedding), p=distance / distance.sum())))
        distance = np.minimum(distance, np.sum((embedding - embedding[chosen[-1]]) ** 2, axis=1))
    return np.sort(np.asarray(chosen))


def k_center_pick(points: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Greedy k-center from a random first frame: each next one the farthest from all picked so far."""
    chosen = [int(np.random.default_rng(seed).integers(len(points)))]
    distance = np.sum((points - points[chosen[0]]) ** 2, axis=1)
    for _ in range(count - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.sum((points - points[chosen[-1]]) ** 2, axis=1))
    return np.sort(np.asarray(chosen))
