# Edge proxy image: a static Go binary on scratch, for linux/amd64, linux/arm64 and
# linux/arm/v7 (Raspberry Pi 2 and later, most arm gateways).
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t flagsmith-edge/edge-proxy .
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 \
#       --build-arg VERSION=$(git describe --tags --always) -t flagsmith-edge/edge-proxy --push .
#   docker run -p 8000:8000 -v $(pwd)/config.json:/app/config.json flagsmith-edge/edge-proxy
#
# To persist documents across restarts, set "cache_dir": "/var/cache/edge-proxy" in
# config.json and mount a volume there (the directory already exists, owned by the
# runtime user, so a fresh named volume inherits that ownership).

# ---- build ------------------------------------------------------------------------------
# The build stage runs on the build machine's own platform and Go cross-compiles for the
# target, so a multi-platform build needs no emulator and runs at native speed.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build

WORKDIR /src

# Modules first, in their own layer: editing a .go file then reuses the downloaded modules
# instead of fetching them again on every build.
COPY go.mod go.sum ./
RUN go mod download

COPY . .

# Declared after the download so that a new VERSION only invalidates the build step.
ARG VERSION=dev
# Set by BuildKit from --platform (linux/arm/v7: TARGETOS=linux TARGETARCH=arm
# TARGETVARIANT=v7). Empty with the legacy builder, which then builds for the host.
ARG TARGETOS TARGETARCH TARGETVARIANT

# CGO_ENABLED=0: scratch has no libc, so the binary must be fully static (this also makes the
# pure-Go DNS resolver the only one). -trimpath keeps the build machine's paths out of the
# binary and stack traces; -s -w drop the symbol table and DWARF (smaller image, and the
# image budget is 15 MB). GOARM is the arm variant without its "v" (v7 → 7); it means
# nothing to other architectures, so it is set for arm only.
RUN if [ "$TARGETARCH" = arm ]; then export GOARM="${TARGETVARIANT#v}"; fi; \
    CGO_ENABLED=0 GOOS="$TARGETOS" GOARCH="$TARGETARCH" go build -trimpath \
        -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/edge-proxy .

# scratch has no useradd, so the runtime user is written out here as plain passwd/group
# lines. A numeric uid lets Kubernetes' runAsNonRoot verify the user without reading
# /etc/passwd; the file exists so tools and Go's os/user show a name instead of a number.
RUN echo 'edgeproxy:x:10001:10001:edge-proxy:/nonexistent:/sbin/nologin' > /out/passwd \
 && echo 'edgeproxy:x:10001:' > /out/group

# The cache directory must exist and belong to the runtime user in the image: the process
# cannot create it under / as non-root, and Docker copies this ownership into a fresh
# named volume mounted on it.
RUN mkdir -p /out/cache && chown 10001:10001 /out/cache && chmod 0750 /out/cache

# ---- runtime ----------------------------------------------------------------------------
FROM scratch

# Root CAs for HTTPS polling of the Flagsmith API; scratch ships none.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/group /etc/group
# --chown: copying a directory copies its contents into a destination directory that the
# builder creates as root, which would leave the cache unwritable for uid 10001.
COPY --from=build --chown=10001:10001 /out/cache /var/cache/edge-proxy
COPY --from=build /out/edge-proxy /edge-proxy

# Relative paths in config.json (environment_document_path, cache_dir) resolve from here.
WORKDIR /app

# No config is baked in: it holds server-side keys. Mount it at this path, as with
# Flagsmith's own image, or point CONFIG_PATH elsewhere.
ENV CONFIG_PATH=/app/config.json

USER 10001:10001

EXPOSE 8000

# scratch has no shell or curl, so the binary probes its own readiness endpoint (it reads
# the same CONFIG_PATH to find the port). Exec form: there is no /bin/sh to run a string.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["/edge-proxy", "-healthcheck"]

ENTRYPOINT ["/edge-proxy"]
