// Every role assignment tuneloop needs below the subscription, in one place (the
// subscription-scope ones are in subscription-roles.bicep). docs/roles.md is the same table in
// words; tests/infra/test_roles.py checks that the two agree.
// Role definition ids: Azure built-in roles (learn.microsoft.com/azure/role-based-access-control/
// built-in-roles; the storage ones as in Azure-Samples/functions-quickstart-python-azd-eventgrid-blob,
// infra/app/rbac.bicep).
// API version: Microsoft.Authorization/roleAssignments@2022-04-01.
// Blob trigger (Event Grid source) with an identity: Storage Blob Data Owner and Storage Queue
// Data Contributor on the trigger's account ("the blob trigger handles failure across multiple
// retries by writing poison blobs to a queue on the storage account specified by the
// connection"), plus Blob Data Owner, Queue Data Contributor and Storage Account Contributor on
// AzureWebJobsStorage
// (learn.microsoft.com/azure/azure-functions/functions-bindings-storage-blob-trigger,
// "Grant permission to the identity"; functions-reference, "Connecting to host storage with an
// identity").

@description('Name of the data storage account.')
@minLength(3)
@maxLength(24)
param dataAccountName string

@description('Name of the Functions host storage account.')
@minLength(3)
@maxLength(24)
param hostAccountName string

@description('Name of the Application Insights component.')
@minLength(1)
param appInsightsName string

@description('Name of the Azure ML workspace.')
@minLength(3)
@maxLength(33)
param workspaceName string

@description('Principal id of the Function App user-assigned identity.')
@minLength(1)
param appPrincipalId string

@description('Principal id of the workspace system-assigned identity.')
@minLength(1)
param workspacePrincipalId string

@description('Principal id of the GPU cluster system-assigned identity.')
@minLength(1)
param computePrincipalId string

@description('Principal id of the data account system topic identity (dead letters).')
@minLength(1)
param dataTopicPrincipalId string

@description('Principal id of the workspace system topic identity (dead letters).')
@minLength(1)
param workspaceTopicPrincipalId string

@description('Object id of the person running azd (AZURE_PRINCIPAL_ID), for the tuneloop command; empty = none.')
param userPrincipalId string = ''

@description('Principal type of userPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'

var roles = {
  blobDataOwner: {
    name: 'Storage Blob Data Owner'
    id: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  }
  blobDataContributor: {
    name: 'Storage Blob Data Contributor'
    id: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  }
  blobDataReader: {
    name: 'Storage Blob Data Reader'
    id: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  }
  queueDataContributor: {
    name: 'Storage Queue Data Contributor'
    id: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  }
  storageAccountContributor: {
    name: 'Storage Account Contributor'
    id: '17d1049b-9a84-46fb-8f53-869881c3d3ab'
  }
  tableDataContributor: {
    name: 'Storage Table Data Contributor'
    id: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  }
  metricsPublisher: {
    name: 'Monitoring Metrics Publisher'
    id: '3913510d-42f4-4e42-8a64-420c390055eb'
  }
  mlDataScientist: {
    name: 'AzureML Data Scientist'
    id: 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
  }
}

resource dataAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataAccountName
}

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

// Storage Blob Data Owner: the blob trigger reads incoming blobs; the app reads datasets, writes reports and splits, moves rejected datasets.
resource appDataBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, appPrincipalId, roles.blobDataOwner.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor: the blob trigger poison-blob queue (webjobs-blobtrigger-poison) on its connection.
resource appDataQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, appPrincipalId, roles.queueDataContributor.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: the run ledger table.
resource appDataTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, appPrincipalId, roles.tableDataContributor.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Owner: AzureWebJobsStorage: host keys, locks, timer schedules, blob receipts; the deployment package.
resource appHostBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostAccount.id, appPrincipalId, roles.blobDataOwner.id)
  scope: hostAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor: AzureWebJobsStorage: the host queues the blob trigger uses.
resource appHostQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostAccount.id, appPrincipalId, roles.queueDataContributor.id)
  scope: hostAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: AzureWebJobsStorage: the host table service (set in the app settings).
resource appHostTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostAccount.id, appPrincipalId, roles.tableDataContributor.id)
  scope: hostAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Account Contributor: the blob trigger with an identity-based AzureWebJobsStorage needs
// it on the host account, with Blob Data Owner and Queue Data Contributor (blob trigger docs,
// "Grant permission to the identity", note 2). Its listKeys grants nothing here: shared keys are off.
resource appHostAccount 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostAccount.id, appPrincipalId, roles.storageAccountContributor.id)
  scope: hostAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageAccountContributor.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher: telemetry with Entra ID (local auth is off).
resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, roles.metricsPublisher.id)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.metricsPublisher.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// AzureML Data Scientist: jobs, models, endpoints, deployments, compute, MLflow metrics.
resource appWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appPrincipalId, roles.mlDataScientist.id)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.mlDataScientist.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Reader: the datastore (serviceDataAccessAuthIdentity).
resource workspaceData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, workspacePrincipalId, roles.blobDataReader.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataReader.id)
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Reader: jobs on the cluster read the splits through the datastore.
resource computeData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, computePrincipalId, roles.blobDataReader.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataReader.id)
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Contributor: dead letters of the BlobCreated subscription.
resource dataTopicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, dataTopicPrincipalId, roles.blobDataContributor.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor.id)
    principalId: dataTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Contributor: dead letters of the job-event subscription.
resource workspaceTopicDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataAccount.id, workspaceTopicPrincipalId, roles.blobDataContributor.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor.id)
    principalId: workspaceTopicPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Contributor: the tuneloop command: upload, status, reports.
resource userDataBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(dataAccount.id, userPrincipalId, roles.blobDataContributor.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor.id)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Storage Table Data Contributor: the tuneloop command: the ledger.
resource userDataTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(dataAccount.id, userPrincipalId, roles.tableDataContributor.id)
  scope: dataAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor.id)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// AzureML Data Scientist: the tuneloop command: plan, submit, promote, sweep.
resource userWorkspace 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(workspace.id, userPrincipalId, roles.mlDataScientist.id)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.mlDataScientist.id)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
