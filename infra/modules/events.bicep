// The two Event Grid system topics: the data account's (BlobCreated -> the blob trigger) and
// the Azure ML workspace's (RunCompleted / RunStatusChanged -> on_job_event). Each has a
// system-assigned identity that writes dead letters into the data account (roles.bicep).
// Their subscriptions are in ../events/subscriptions.bicep, deployed by the postdeploy hook:
// both endpoints exist only once the code is deployed (the blobs_extension key, the
// on_job_event function).
// API version: Microsoft.EventGrid/systemTopics@2022-06-15 (GA; identity on system topics;
// learn.microsoft.com/azure/templates/microsoft.eventgrid/2022-06-15/systemtopics).

@description('Azure region of the topics (the region of their sources).')
@minLength(1)
param location string

@description('Tags put on every resource.')
param tags object

@description('Name of the data account system topic (3-128 letters, digits and hyphens).')
@minLength(3)
@maxLength(128)
param dataTopicName string

@description('Name of the workspace system topic (3-128 letters, digits and hyphens).')
@minLength(3)
@maxLength(128)
param workspaceTopicName string

@description('Resource id of the data storage account.')
@minLength(1)
param dataAccountId string

@description('Resource id of the Azure ML workspace.')
@minLength(1)
param workspaceId string

resource dataTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: dataTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: dataAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource workspaceTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: workspaceTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: workspaceId
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

output dataTopicName string = dataTopic.name
output dataTopicPrincipalId string = dataTopic.identity.principalId
output workspaceTopicName string = workspaceTopic.name
output workspaceTopicPrincipalId string = workspaceTopic.identity.principalId
