// The Azure ML workspace with what it requires (Key Vault, its own storage account, the shared
// Application Insights), the GPU cluster tuneloop fine-tunes on, and the `tuneloop` datastore
// on the data account's prepared container with identity-based access (no stored credential).
// API versions: Microsoft.MachineLearningServices/workspaces, computes and datastores
// @2024-04-01 (GA; learn.microsoft.com/azure/templates/microsoft.machinelearningservices/
// 2024-04-01/workspaces, .../workspaces/computes, .../workspaces/datastores: AzureBlob with
// credentials { credentialsType: 'None' } and serviceDataAccessAuthIdentity);
// Microsoft.KeyVault/vaults@2023-07-01; Microsoft.Storage/storageAccounts@2023-05-01.

@description('Azure region of the workspace and its resources.')
@minLength(1)
param location string

@description('Tags put on every resource.')
param tags object

@description('Name of the Azure ML workspace (3-33 letters, digits, hyphens and underscores).')
@minLength(3)
@maxLength(33)
param workspaceName string

@description('Name of the Key Vault the workspace requires (3-24 letters, digits and hyphens).')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Name of the workspace storage account (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param mlStorageName string

@description('Resource id of the Application Insights component the workspace logs to.')
@minLength(1)
param appInsightsId string

@description('Name of the GPU cluster (TUNELOOP_COMPUTE): 2-16 letters, digits and hyphens, a letter first.')
@minLength(2)
@maxLength(16)
param computeName string

@description('VM size of the GPU cluster; must be in the base model\'s fine-tune allow-list (main.bicep restricts it).')
@minLength(1)
param computeVmSize string

@description('Most nodes the cluster scales out to (it scales in to 0 when idle).')
@minValue(1)
@maxValue(100)
param computeMaxNodes int

@description('Name of the datastore (TUNELOOP_DATASTORE) on the prepared container.')
@minLength(1)
@maxLength(255)
param datastoreName string

@description('Name of the data storage account the datastore points at.')
@minLength(3)
@maxLength(24)
param dataAccountName string

@description('The prepared container (TUNELOOP_PREPARED_CONTAINER) of the data account.')
@minLength(3)
@maxLength(63)
param preparedContainer string

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: the workspace reaches its Key Vault over the public endpoint (no VNet in this template); only the workspace's own access policy reads it; soft delete is on.
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109.
  // checkov:skip=CKV_AZURE_110: no purge protection so that `azd down --purge` removes the vault and `azd up` can recreate its name; it holds only the workspace's own secrets, which the workspace recreates.
  // checkov:skip=CKV_AZURE_42: soft delete is on (7 days); the check also asks for purge protection, off for the reason of CKV_AZURE_110.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Access policies, as Azure ML's own quickstart templates: the workspace adds the policy
    // for its identity when it is created. tuneloop itself stores nothing here.
    enableRbacAuthorization: false
    accessPolicies: []
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // No purge protection: `azd down --purge` must be able to remove the vault, so that
    // `azd up` can recreate the same name (purge protection cannot be turned off once on).
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource mlStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no VNet in this template: Event Grid, the Flex Consumption app and Azure ML reach the account over its public endpoint. The data and host accounts allow no shared key, so every call needs an Entra identity with a data role (roles.bicep).
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35.
  // checkov:skip=CKV_AZURE_206: Standard_LRS keeps the idle cost lowest; what is stored is either a user upload, derived from one, or recreated by a redeploy or a new job.
  // checkov:skip=CKV_AZURE_43: the name is computed in main.bicep ('st' + a role + uniqueString: lower-case letters and digits, at most 24); the check cannot evaluate a parameter.
  name: mlStorageName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // Shared keys stay on here: the workspace's system datastores use the account key
    // (identity-based system datastores are not in API 2024-04-01). tuneloop's data is elsewhere.
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' = {
  // checkov:skip=CKV_AZURE_243: no VNet in this template: the Function App (Flex Consumption, no VNet integration) calls the workspace's public endpoint, and every call needs an Entra identity with AzureML Data Scientist.
  name: workspaceName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  properties: {
    friendlyName: workspaceName
    keyVault: keyVault.id
    storageAccount: mlStorage.id
    applicationInsights: appInsightsId
    publicNetworkAccess: 'Enabled'
    hbiWorkspace: false
  }
}

resource cluster 'Microsoft.MachineLearningServices/workspaces/computes@2024-04-01' = {
  parent: workspace
  name: computeName
  location: location
  tags: tags
  identity: {
    // The identity a job on this cluster reads the splits with (Storage Blob Data Reader on
    // the data account, roles.bicep).
    type: 'SystemAssigned'
  }
  properties: {
    computeType: 'AmlCompute'
    disableLocalAuth: true
    properties: {
      vmSize: computeVmSize
      vmPriority: 'Dedicated'
      osType: 'Linux'
      // Nothing runs, nothing is billed: the cluster scales in to 0 nodes after 2 idle minutes.
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT120S'
      }
      remoteLoginPortPublicAccess: 'Disabled'
      enableNodePublicIp: true
    }
  }
}

resource datastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-04-01' = {
  parent: workspace
  name: datastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: dataAccountName
    containerName: preparedContainer
    endpoint: environment().suffixes.storage
    protocol: 'https'
    // No credentials: jobs read with an identity (the cluster's, or the submitter's), studio
    // previews with the workspace's own identity.
    credentials: {
      credentialsType: 'None'
    }
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    description: 'tuneloop train/validation splits (prepared/<run-id>/).'
  }
}

output workspaceName string = workspace.name
output workspaceId string = workspace.id
output workspacePrincipalId string = workspace.identity.principalId
output computeName string = cluster.name
output computePrincipalId string = cluster.identity.principalId
output datastoreName string = datastore.name
