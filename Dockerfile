# syntax=docker/dockerfile:1
# Agent Trust Registry container image.
#
# Build:  docker build -t atr .
# Run:    docker run --rm -p 8443:8443 -v atr-data:/var/lib/atr \
#           -e ATR_LISTEN=0.0.0.0:8443 -e ATR_PKCS11_PIN_FILE=/run/secrets/atr-pin atr
#
# The tokens (SoftHSM2 in this image; mount a network HSM's PKCS#11 module
# and set ATR_PKCS11_MODULE for production) live in the /var/lib/atr volume,
# which is 0700 and owned by the unprivileged user atr (uid 10001). Run the
# key ceremonies (atr ceremony …) before the first start; see docs/.

# ---- build stage -----------------------------------------------------------
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download && go mod verify
# Only the Go sources: never the data dir (var/ holds tokens, the PIN and
# API keys) or anything else from the working tree.
COPY cmd ./cmd
COPY api ./api
COPY ca ./ca
COPY hsm ./hsm
COPY registry ./registry
# cgo is needed: the PKCS#11 module is loaded with dlopen and SQLite is cgo.
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/atr ./cmd/atr

# ---- runtime stage ---------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 atr \
 && useradd --system --uid 10001 --gid atr --home-dir /var/lib/atr --shell /usr/sbin/nologin atr \
 && install -d -m 0700 -o atr -g atr /var/lib/atr /var/lib/atr/tokens \
 && printf 'directories.tokendir = /var/lib/atr/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' > /etc/atr-softhsm2.conf \
 && chmod 0644 /etc/atr-softhsm2.conf
COPY --from=build /out/atr /usr/local/bin/atr

ENV ATR_DATA_DIR=/var/lib/atr \
    ATR_LISTEN=0.0.0.0:8443 \
    ATR_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so \
    SOFTHSM2_CONF=/etc/atr-softhsm2.conf

USER 10001:10001
WORKDIR /var/lib/atr
VOLUME ["/var/lib/atr"]
EXPOSE 8443

# No curl or wget in the image: the binary checks its own /healthz over TLS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["atr", "healthcheck"]

ENTRYPOINT ["atr", "serve"]
