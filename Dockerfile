# syntax=docker/dockerfile:1
# The nextwatch image: the API, the trainer, the archiver and the Spark master and worker all run
# from it (same Python, same pyspark, same nextwatch on driver and executors). The `jupyter`
# target adds JupyterLab and matplotlib for notebooks.
#
#   docker build -t nextwatch:0.1.0 .                                  # the service image
#   docker build --target jupyter -t nextwatch-jupyter:0.1.0 .        # notebooks

FROM python:3.11.13-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    # pip installs pyspark's launch scripts and jars inside the package; spark-class needs to
    # know where, and executors need the same Python as the driver.
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python
# Java 17 runs Spark: the JVM behind pyspark in the trainer, and the master and worker daemons.
# Not pinned to a Debian version (DL3008): bookworm's security updates replace old versions in
# the archive, so an exact pin breaks the build; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
# The services run as this user (uid 10001), never as root.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/nextwatch nextwatch \
 && mkdir -p /data/archive \
 && chown -R nextwatch:nextwatch /data
WORKDIR /opt/nextwatch

# Dependencies only, from pyproject.toml at the versions constraints.txt pins: this layer is
# rebuilt when those two files change, not on every change to the source.
FROM base AS deps
COPY pyproject.toml constraints.txt ./
RUN python -m venv "$VIRTUAL_ENV" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
# PyTorch (the `sequence` extra) trains the sequence model; its CPU build, from PyTorch's own
# index, is a tenth of the default download, which carries CUDA libraries nothing here uses.

# Notebooks: the project plus JupyterLab and matplotlib.
FROM deps AS jupyter
RUN pip install -c constraints.txt jupyterlab==4.6.6 matplotlib==3.11.2
COPY README.md ./
COPY src ./src
RUN pip install --no-deps -c constraints.txt . \
 && rm -rf build src/*.egg-info \
 && python -m nextwatch.model.compiled \
 && mkdir -p /home/nextwatch/notebooks \
 && chown nextwatch:nextwatch /home/nextwatch/notebooks
# The project's notebooks; compose's named volume starts as a copy of this folder.
COPY --chown=10001:10001 notebooks/ /home/nextwatch/notebooks/
USER 10001:10001
WORKDIR /home/nextwatch/notebooks
EXPOSE 8888
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser"]

# The service image (the default target): the package itself, installed last.
FROM deps AS service
COPY README.md ./
COPY src ./src
# The model's kernels compiled into the image (nextwatch/model/compiled.py): no worker waits for numba.
RUN pip install --no-deps -c constraints.txt . && rm -rf build src/*.egg-info && python -m nextwatch.model.compiled
USER 10001:10001
# A folder the user can write to: Spark may leave files (spark-warehouse, derby.log) in the cwd.
WORKDIR /home/nextwatch
EXPOSE 5000
CMD ["nextwatch", "serve", "--host", "0.0.0.0", "--port", "5000"]
