# blogflow's custom SDK container for Dataflow (and any portable runner's DOCKER environment):
# Beam's Python SDK image of the apache-beam version setup.py pins, with blogflow installed,
# so workers start with the code and its dependencies and install nothing at start-up.
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/blogflow:0.1.0 .
#   ... --runner dataflow --sdk_container_image REGION-docker.pkg.dev/PROJECT/REPO/blogflow:0.1.0
# tests/test_deploy.py keeps the tag equal to the installed and pinned apache-beam version.
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/blogflow
COPY setup.py pyproject.toml ./
COPY blogflow ./blogflow
# No extras: the image has Beam's Google Cloud libraries, and tests and linters stay out.
RUN pip install --no-cache-dir . && python -c "import blogflow.pipelines.summing"
# The SDK image's entry point (/opt/apache/beam/boot) starts the worker: left as it is.
