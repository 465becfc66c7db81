// The two Event Grid subscriptions, deployed by scripts/postdeploy.sh after `azd deploy`:
// the blob extension's system key (blobs_extension) and the on_job_event function exist only
// once the code is deployed. Both retry for 24 hours and then dead-letter into the data
// account (the topic's own identity writes there: Storage Blob Data Contributor, roles.bicep),
// so no event is lost.
// API version: Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15 (GA:
// deadLetterWithResourceIdentity, retryPolicy, AzureFunction and WebHook destinations,
// IsNotNull advanced filter; learn.microsoft.com/azure/templates/microsoft.eventgrid/2022-06-15/
// systemtopics/eventsubscriptions). host/default listKeys: Microsoft.Web/sites/host@2024-04-01.

@description('Name of the Function App (output AZURE_FUNCTION_APP_NAME).')
@minLength(2)
@maxLength(60)
param functionAppName string

@description('Name of the data account system topic (output AZURE_DATA_TOPIC_NAME).')
@minLength(3)
@maxLength(128)
param dataTopicName string

@description('Name of the workspace system topic (output AZURE_WORKSPACE_TOPIC_NAME).')
@minLength(3)
@maxLength(128)
param workspaceTopicName string

@description('Name of the data storage account (output AZURE_STORAGE_ACCOUNT_NAME).')
@minLength(3)
@maxLength(24)
param dataAccountName string

@description('The watched container (TUNELOOP_INCOMING_CONTAINER).')
@minLength(3)
@maxLength(63)
param incomingContainer string = 'incoming'

@description('Container of the data account that receives undeliverable events.')
@minLength(3)
@maxLength(63)
param deadLetterContainer string = 'deadletter'

@description('Delivery attempts before an event is dead-lettered (Event Grid allows 1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes Event Grid keeps retrying an event (Event Grid allows 1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

// The tag every tuneloop job carries (shared/naming.py RUN_TAG). Event Grid filter keys cannot
// contain a dot, which is why tuneloop tags have none.
var runTag = 'tuneloop_run'

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource dataAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataAccountName
}

resource dataTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: dataTopicName
}

resource workspaceTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: workspaceTopicName
}

var retryPolicy = {
  maxDeliveryAttempts: maxDeliveryAttempts
  eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
}

var deadLetter = {
  identity: {
    type: 'SystemAssigned'
  }
  deadLetterDestination: {
    endpointType: 'StorageBlob'
    properties: {
      resourceId: dataAccount.id
      blobContainerName: deadLetterContainer
    }
  }
}

// The blob extension webhook of the Event Grid blob trigger (functions/ingest.py,
// function ingest_dataset; blob trigger docs: /runtime/webhooks/blobs?functionName=
// Host.Functions.<name>&code=<blobs_extension key>).
var blobsKey = listKeys('${functionApp.id}/host/default', '2024-04-01').systemKeys.blobs_extension
var blobWebhook = 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.ingest_dataset&code=${blobsKey}'

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: dataTopic
  name: 'tuneloop-ingest'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: blobWebhook
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${incomingContainer}/'
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}

resource jobEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: workspaceTopic
  name: 'tuneloop-jobs'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        // functions/job_events.py: @bp.function_name("on_job_event")
        resourceId: '${functionApp.id}/functions/on_job_event'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.RunCompleted'
        'Microsoft.MachineLearningServices.RunStatusChanged'
      ]
      advancedFilters: [
        {
          operatorType: 'IsNotNull'
          key: 'data.runTags.${runTag}'
        }
      ]
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}

output blobSubscriptionName string = blobCreated.name
output jobSubscriptionName string = jobEvents.name
