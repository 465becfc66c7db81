// The role assignments tuneloop needs at subscription scope (docs/roles.md lists them with the
// others). Deployed from main.bicep, which targets the subscription.
// Monitoring Reader (43d0d8ad-25c7-4714-9337-8ba259a9fe05; learn.microsoft.com/azure/
// role-based-access-control/built-in-roles/monitor): its actions are */read and
// Microsoft.Support/*, so it grants both subscription-scope reads tuneloop makes:
// - the sweeper's metrics:getBatch (Azure Monitor batch metrics API is a subscription-level
//   call; a role on the workspace alone gives 401), and
// - the planner's compute.list_sizes(): .../providers/Microsoft.MachineLearningServices/
//   locations/{location}/vmSizes (Microsoft.MachineLearningServices/locations/vmSizes/read).
// API version: Microsoft.Authorization/roleAssignments@2022-04-01.
targetScope = 'subscription'

@description('Principal id of the Function App user-assigned identity.')
@minLength(1)
param appPrincipalId string

var roles = {
  monitoringReader: {
    name: 'Monitoring Reader'
    id: '43d0d8ad-25c7-4714-9337-8ba259a9fe05'
  }
}

// Monitoring Reader: metrics:getBatch (sweeper) and the vmSizes list (planner).
resource appMonitoring 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, appPrincipalId, roles.monitoringReader.id)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
