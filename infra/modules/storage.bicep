// The two storage accounts: `data` (what users drop and what tuneloop writes: datasets,
// reports, quarantine, splits, the ledger table, Event Grid dead letters) and `host` (the
// Functions host's AzureWebJobsStorage and the Flex Consumption deployment package).
// Both: no shared keys (identities only), TLS 1.2, no anonymous blob access.
// API version: Microsoft.Storage/storageAccounts@2023-05-01
// (learn.microsoft.com/azure/templates/microsoft.storage/storageaccounts).

@description('Azure region of the storage accounts.')
@minLength(1)
param location string

@description('Tags put on every resource.')
param tags object

@description('Name of the data account (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param dataAccountName string

@description('Name of the Functions host account (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param hostAccountName string

@description('Containers of the data account: the TUNELOOP_*_CONTAINER values and the dead-letter container.')
@minLength(1)
param dataContainers array

@description('Name of the ledger table (TUNELOOP_LEDGER_TABLE): 3-57 letters and digits, a letter first (its active table adds the suffix active, and a table name has at most 63).')
@minLength(3)
@maxLength(57)
param ledgerTable string

@description('Container of the host account that holds the Flex Consumption deployment package.')
@minLength(3)
@maxLength(63)
param deploymentContainer string

var commonProperties = {
  minimumTlsVersion: 'TLS1_2'
  allowBlobPublicAccess: false
  allowSharedKeyAccess: false
  defaultToOAuthAuthentication: true
  supportsHttpsTrafficOnly: true
  allowCrossTenantReplication: false
  publicNetworkAccess: 'Enabled'
  networkAcls: {
    bypass: 'AzureServices'
    defaultAction: 'Allow'
  }
}

resource data 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no VNet in this template: Event Grid, the Flex Consumption app and Azure ML reach the account over its public endpoint. The data and host accounts allow no shared key, so every call needs an Entra identity with a data role (roles.bicep).
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35.
  // checkov:skip=CKV_AZURE_206: Standard_LRS keeps the idle cost lowest; what is stored is either a user upload, derived from one, or recreated by a redeploy or a new job.
  // checkov:skip=CKV_AZURE_43: the name is computed in main.bicep ('st' + a role + uniqueString: lower-case letters and digits, at most 24); the check cannot evaluate a parameter.
  name: dataAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: commonProperties
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: data
  name: 'default'
  properties: {
    // A deleted or overwritten dataset can be recovered for 7 days.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for name in dataContainers: {
  parent: dataBlobs
  name: name
  properties: {
    publicAccess: 'None'
  }
}]

resource dataTables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: data
  name: 'default'
}

resource ledger 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: dataTables
  name: ledgerTable
}

// The ledger's active table (shared.ledger.active_table_name): the in-flight index and the open
// claims, kept apart from the run history so that the reconciler's queries touch active rows only.
resource ledgerActive 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: dataTables
  name: '${ledgerTable}active'
}

resource host 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no VNet in this template: Event Grid, the Flex Consumption app and Azure ML reach the account over its public endpoint. The data and host accounts allow no shared key, so every call needs an Entra identity with a data role (roles.bicep).
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35.
  // checkov:skip=CKV_AZURE_206: Standard_LRS keeps the idle cost lowest; what is stored is either a user upload, derived from one, or recreated by a redeploy or a new job.
  // checkov:skip=CKV_AZURE_43: the name is computed in main.bicep ('st' + a role + uniqueString: lower-case letters and digits, at most 24); the check cannot evaluate a parameter.
  name: hostAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: commonProperties
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: host
  name: 'default'
}

resource deployment 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

output dataAccountName string = data.name
output dataAccountId string = data.id
output dataBlobEndpoint string = data.properties.primaryEndpoints.blob
output dataQueueEndpoint string = data.properties.primaryEndpoints.queue
output dataTableEndpoint string = data.properties.primaryEndpoints.table
output hostAccountName string = host.name
output hostBlobEndpoint string = host.properties.primaryEndpoints.blob
output hostQueueEndpoint string = host.properties.primaryEndpoints.queue
output hostTableEndpoint string = host.properties.primaryEndpoints.table
