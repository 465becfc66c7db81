// The Function App on Flex Consumption (FC1, Linux, Python 3.11) with one user-assigned
// identity that serves everything: AzureWebJobsStorage, the blob trigger's connection
// (TUNELOOP_STORAGE), Application Insights and the app's own SDK clients (AZURE_CLIENT_ID,
// read by shared/settings.py and given to DefaultAzureCredential in shared/clients.py).
// API versions: Microsoft.Web/serverfarms and Microsoft.Web/sites @2024-04-01 (functionAppConfig
// for Flex Consumption; learn.microsoft.com/azure/templates/microsoft.web/2024-04-01/sites),
// Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31.
// Flex Consumption always runs the current Functions 4.x host (>= 4.34.1, which the
// Event Grid blob trigger with SDK-type bindings needs) and rejects the
// FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION app settings: the runtime is
// functionAppConfig.runtime (learn.microsoft.com/azure/azure-functions/flex-consumption-plan,
// "Deprecated properties and settings").

@description('Azure region of the Function App.')
@minLength(1)
param location string

@description('Tags put on every resource.')
param tags object

@description('Name of the Function App (2-60 letters, digits and hyphens; globally unique host name).')
@minLength(2)
@maxLength(60)
param functionAppName string

@description('Name of the Flex Consumption plan.')
@minLength(1)
@maxLength(60)
param planName string

@description('Name of the user-assigned identity of the app (3-128 characters).')
@minLength(3)
@maxLength(128)
param identityName string

@description('Name of the host storage account (AzureWebJobsStorage, deployment package).')
@minLength(3)
@maxLength(24)
param hostAccountName string

@description('Container of the host account holding the deployment package.')
@minLength(3)
@maxLength(63)
param deploymentContainer string

@description('Blob endpoint of the data account: the blob trigger connection TUNELOOP_STORAGE.')
@minLength(1)
param dataBlobEndpoint string

@description('Queue endpoint of the data account: the blob trigger keeps its poison queue there.')
@minLength(1)
param dataQueueEndpoint string

@description('Name of the Application Insights component.')
@minLength(1)
param appInsightsName string

@description('The TUNELOOP_* settings, from main.bicep (the one place they are set).')
param tuneloopSettings object

@description('Most instances the app scales out to (Flex Consumption allows 40-1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance in MB (Flex Consumption sizes).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy multiplies the always-ready cost; tuneloop's triggers are retried by Event Grid and the reconciler, so an outage delays work and loses none.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// The host's own storage with the identity (Functions docs, "Connecting to host storage with
// an identity": <CONNECTION>__blobServiceUri/__queueServiceUri + __credential + __clientId).
var hostStorageSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AzureWebJobsStorage__blobServiceUri: hostAccount.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: hostAccount.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: hostAccount.properties.primaryEndpoints.table
}

// The blob trigger's connection (functions/ingest.py: connection="TUNELOOP_STORAGE"). The
// queue must be named: with __serviceUri alone the host cannot reach the data account's
// queues and the poison-blob queue lands elsewhere (blob trigger docs, identity-based
// connections: blobServiceUri + queueServiceUri).
var triggerSettings = {
  TUNELOOP_STORAGE__credential: 'managedidentity'
  TUNELOOP_STORAGE__clientId: identity.properties.clientId
  TUNELOOP_STORAGE__blobServiceUri: dataBlobEndpoint
  TUNELOOP_STORAGE__queueServiceUri: dataQueueEndpoint
}

var platformSettings = {
  // The app's SDK clients (DefaultAzureCredential) pick the user-assigned identity by this.
  AZURE_CLIENT_ID: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers BlobCreated to the blob extension webhook (system key) and job events to on_job_event over the public endpoint; there is no VNet in this template.
  // checkov:skip=CKV_AZURE_17: Event Grid deliveries carry no client certificate; requiring one would refuse every event.
  // checkov:skip=CKV_AZURE_212: the app must scale to zero: idle cost is the point of Flex Consumption; lost invocations are retried by Event Grid and the reconciler timer.
  // checkov:skip=CKV_AZURE_213: no HTTP endpoint to probe: the app has only Event Grid and timer triggers.
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for item in items(union(tuneloopSettings, triggerSettings, hostStorageSettings, platformSettings)): {
        name: item.key
        value: item.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostAccount.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

output functionAppName string = site.name
output functionAppId string = site.id
output defaultHostName string = site.properties.defaultHostName
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output identityId string = identity.id
