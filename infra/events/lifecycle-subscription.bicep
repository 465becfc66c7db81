// An example subscription to tuneloop's lifecycle events (issue 12), for a team that wants to
// hear when its line changes. Not deployed by azd: a subscriber deploys it into the resource
// group of the topic (output AZURE_LIFECYCLE_TOPIC_NAME), e.g.
//   az deployment group create -g <resource group> -f infra/events/lifecycle-subscription.bicep \
//     -p topicName=<AZURE_LIFECYCLE_TOPIC_NAME> webhookUrl=<https URL> subjectBeginsWith=lines/support/
// The destination is any https webhook that answers the CloudEvents 1.0 abuse-protection
// handshake (an OPTIONS request with WebHook-Request-Origin, answered with
// WebHook-Allowed-Origin; learn.microsoft.com/azure/event-grid/end-point-validation-cloud-
// events-schema): with eventDeliverySchema CloudEventSchemaV1_0, Event Grid uses it instead of
// its own validation event. The events arrive as sent: type tuneloop.run.<state>,
// subject lines/<line>/runs/<run>, id stable per run + state + attempt (deduplicate on it),
// data tuneloop.event/v1 (schemas/tuneloop.event.v1.json).
// A Logic App (e.g. to post to a Teams channel) subscribes itself instead: its Event Grid
// trigger ("When a resource event occurs", resource type Microsoft.EventGrid.Topics, this
// topic) creates the subscription; filter it the same way.
// API version: Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15 (GA: WebHook
// destination, CloudEventSchemaV1_0 delivery, subjectBeginsWith, retryPolicy;
// learn.microsoft.com/azure/templates/microsoft.eventgrid/2022-06-15/topics/eventsubscriptions).

@description('Name of the lifecycle events topic (output AZURE_LIFECYCLE_TOPIC_NAME).')
@minLength(3)
@maxLength(50)
param topicName string

@description('Name of this subscription (3-64 letters, digits and hyphens).')
@minLength(3)
@maxLength(64)
param subscriptionName string = 'tuneloop-line-changes'

@secure()
@description('The https webhook that receives the events (may carry its own key in the query).')
@minLength(12)
param webhookUrl string

@description('Which runs: lines/ = every line; lines/<line>/ = one line (the subject is lines/<line>/runs/<run>).')
@minLength(6)
param subjectBeginsWith string = 'lines/'

@description('The event types delivered: what a team acts on. Every type: schemas/tuneloop.event.v1.json.')
param eventTypes array = [
  'tuneloop.run.rejected'
  'tuneloop.run.promoted'
  'tuneloop.run.held'
  'tuneloop.run.failed'
  'tuneloop.endpoint.swept'
]

@description('Delivery attempts before an event is dropped (Event Grid: 1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an undelivered event is retried (Event Grid: 1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: topicName
}

resource lineChanges 'Microsoft.EventGrid/topics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: webhookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: {
      includedEventTypes: eventTypes
      subjectBeginsWith: subjectBeginsWith
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
  }
}

output subscriptionName string = lineChanges.name
