#!/bin/sh
# azd postdeploy hook: create the two Event Grid subscriptions (infra/events/subscriptions.bicep).
# They need what exists only after the code is deployed: the blob extension's system key
# (blobs_extension, created when the host first indexes the Event Grid blob trigger) and the
# on_job_event function. azd passes its environment (.azure/<env>/.env: the outputs of
# infra/main.bicep) to the hook as environment variables. Idempotent: rerun with
# `azd hooks run postdeploy`.
set -eu

for cmd in az; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "postdeploy: '$cmd' is not installed; install the Azure CLI, run 'az login', then 'azd hooks run postdeploy'" >&2
    exit 2
  fi
done

for name in AZURE_SUBSCRIPTION_ID AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_STORAGE_ACCOUNT_NAME \
            AZURE_DATA_TOPIC_NAME AZURE_WORKSPACE_TOPIC_NAME TUNELOOP_INCOMING_CONTAINER TUNELOOP_DEADLETTER_CONTAINER; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "postdeploy: $name is not set; run 'azd provision' first (it writes the outputs of infra/main.bicep to the azd environment)" >&2
    exit 2
  fi
done

az account set --subscription "$AZURE_SUBSCRIPTION_ID"

# Wait until the host has indexed the functions: the blobs_extension key and on_job_event.
attempt=0
until key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
              --query "systemKeys.blobs_extension" -o tsv 2>/dev/null) && [ -n "$key" ]; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "postdeploy: the app has no blobs_extension key after 5 minutes; check that the deployment succeeded ('azd deploy'), then 'azd hooks run postdeploy'" >&2
    exit 1
  fi
  sleep 10
done
unset key

az deployment group create \
  --name tuneloop-event-subscriptions \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --template-file "$(dirname "$0")/../infra/events/subscriptions.bicep" \
  --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" \
               dataTopicName="$AZURE_DATA_TOPIC_NAME" \
               workspaceTopicName="$AZURE_WORKSPACE_TOPIC_NAME" \
               dataAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
               incomingContainer="$TUNELOOP_INCOMING_CONTAINER" \
               deadLetterContainer="$TUNELOOP_DEADLETTER_CONTAINER" \
  --output none

echo "postdeploy: Event Grid subscriptions tuneloop-ingest (BlobCreated under $TUNELOOP_INCOMING_CONTAINER/) and tuneloop-jobs (job events) are in place"
