# syntax=docker/dockerfile:1
# Build: the sqlite driver needs cgo, so the binary is built with gcc and
# linked statically, then copied into a distroless image without a shell.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath \
      -tags 'sqlite_omit_load_extension,netgo,osusergo' \
      -ldflags "-s -w -X main.version=${VERSION} -linkmode external -extldflags '-static'" \
      -o /out/mmconnect ./cmd/mmconnect \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mmconnect /usr/local/bin/mmconnect
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV MMCONNECT_ADDR=:8080 \
    MMCONNECT_DATA_DIR=/data
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/mmconnect", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/mmconnect"]
CMD ["serve"]
