#!/usr/bin/env bash
# Example deploy step. A real one would roll $DROVER_ARTIFACT out to the platform;
# this one records the deployed state of the component under the data directory.
set -euo pipefail

deployed="$DROVER_DATA_DIR/toolhunt-example/deployed"
mkdir -p "$deployed"

case "$DROVER_TYPE" in
    continuous) what="service with ${DROVER_REPLICAS:-1} replica(s)${DROVER_PORT:+ on port $DROVER_PORT}" ;;
    scheduled)  what="cron job on schedule '$DROVER_SCHEDULE'" ;;
    one-off)    what="one-off run" ;;
esac
echo "deploying $DROVER_COMPONENT as a $what"
echo "  artifact: $DROVER_ARTIFACT"
echo "  command:  $DROVER_COMMAND"
sleep 0.3
{
    echo "component=$DROVER_COMPONENT"
    echo "type=$DROVER_TYPE"
    echo "artifact=$DROVER_ARTIFACT"
    echo "command=$DROVER_COMMAND"
    echo "deployment=$DROVER_DEPLOYMENT"
    echo "fence=$DROVER_FENCE"
} > "$deployed/$DROVER_COMPONENT.state"
echo "deployed $DROVER_COMPONENT"
