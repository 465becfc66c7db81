// The one role the lifecycle events topic needs: the Function App's identity may publish to it.
// EventGrid Data Sender ("Allows send access to event grid events"), id
// d5a91429-5739-47e2-a06b-3470a27159e7 (learn.microsoft.com/azure/role-based-access-control/
// built-in-roles, Integration), scoped to the topic alone, not the resource group.
// API version: Microsoft.Authorization/roleAssignments@2022-04-01.
// docs/roles.md row: EventGrid Data Sender | `topic` | `appPrincipalId` (tests/infra/
// test_lifecycle_topic.py checks this module; test_roles.py's ROLE_MODULES once the row is in).

@description('Name of the lifecycle events topic (lifecycle-topic.bicep).')
@minLength(3)
@maxLength(50)
param topicName string

@description('Principal id of the Function App user-assigned identity.')
@minLength(1)
param appPrincipalId string

var roles = {
  eventGridDataSender: {
    name: 'EventGrid Data Sender'
    id: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  }
}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: topicName
}

resource appSendsEvents 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, appPrincipalId, roles.eventGridDataSender.id)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
