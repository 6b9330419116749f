#!/usr/bin/env bash
# Example build step. A real one would clone $DROVER_REPOSITORY at $DROVER_REF and
# build an image; this one writes an "artifact" file under the data directory and
# reports it through $DROVER_OUTPUT.
set -euo pipefail

artifacts="$DROVER_DATA_DIR/toolhunt-example/artifacts"
mkdir -p "$artifacts"

if [[ -n "$DROVER_IMAGE" ]]; then
    # A prebuilt image: resolve it to a (pretend) digest.
    digest=$(printf '%s' "$DROVER_IMAGE" | sha256sum | cut -c1-16)
    echo "resolving image $DROVER_IMAGE"
    artifact="$DROVER_IMAGE@sha256:$digest"
else
    echo "building $DROVER_COMPONENT from $DROVER_REPOSITORY (ref ${DROVER_REF:-default}, version $DROVER_VERSION)"
    file="$artifacts/$DROVER_COMPONENT-$DROVER_VERSION.tar"
    {
        echo "component=$DROVER_COMPONENT"
        echo "repository=$DROVER_REPOSITORY"
        echo "ref=$DROVER_REF"
        echo "version=$DROVER_VERSION"
        echo "built-by-deployment=$DROVER_DEPLOYMENT"
    } > "$file"
    artifact="file://$file"
fi
sleep 0.3
echo "artifact=$artifact" >> "$DROVER_OUTPUT"
echo "built $artifact"
