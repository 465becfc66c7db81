// tuneloop's own lifecycle events (issue 12): the custom Event Grid topic the app publishes a
// CloudEvent to for every state a run enters, every exam result and every sweep decision
// (shared/lifecycle.py builds them, the outbox publishes them with azure-eventgrid's
// EventGridPublisherClient; TUNELOOP_EVENTS_ENDPOINT = the endpoint output below).
// Optional: main.bicep deploys it when lifecycleEvents is true (the default). The app's
// identity gets EventGrid Data Sender on it in lifecycle-topic-role.bicep (a separate module:
// the role needs the app's identity, and the app's settings need this topic's endpoint).
// Subscriptions are the subscriber's: see ../events/lifecycle-subscription.bicep.
// API version: Microsoft.EventGrid/topics@2022-06-15 (GA: inputSchema CloudEventSchemaV1_0,
// disableLocalAuth, publicNetworkAccess; learn.microsoft.com/azure/templates/
// microsoft.eventgrid/2022-06-15/topics).

@description('Azure region of the topic.')
@minLength(1)
param location string

@description('Tags put on every resource.')
param tags object

@description('Name of the lifecycle events topic (3-50 letters, digits and hyphens).')
@minLength(3)
@maxLength(50)
param topicName string

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  // checkov:skip=CKV_AZURE_193: the Function App (Flex Consumption, no VNet in this template) publishes over the public endpoint; local auth is off, so only an Entra identity with EventGrid Data Sender can send.
  name: topicName
  location: location
  tags: tags
  // Its own identity, for subscriptions that dead-letter or deliver with the topic's identity
  // (deadLetterWithResourceIdentity / deliveryWithResourceIdentity); it is granted nothing here.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    // The publisher posts CloudEvents 1.0 (application/cloudevents-batch+json); a topic with
    // the Event Grid schema would refuse them.
    inputSchema: 'CloudEventSchemaV1_0'
    // Entra ID only: the app publishes with its managed identity (EventGrid Data Sender);
    // no access keys or SAS tokens to leak. TUNELOOP_EVENTS_KEY stays unset in Azure.
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output topicName string = topic.name
output topicId string = topic.id
output endpoint string = topic.properties.endpoint
