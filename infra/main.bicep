// tuneloop on Azure: everything `azd up` creates (azure.yaml). A subscription-scope deployment
// that creates the resource group, the resources (modules/), every role assignment
// (modules/roles.bicep, modules/subscription-roles.bicep) and the outputs azd writes to
// .azure/<env>/.env. The two Event Grid subscriptions follow in the postdeploy hook
// (scripts/postdeploy.sh deploys events/subscriptions.bicep).
// Resources are declared in local modules on purpose: registry modules (br/public:avm/...)
// need the network to build, and checkov cannot see inside them.
targetScope = 'subscription'

@description('Name of the azd environment; names and tags of every resource derive from it.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region of every resource. It needs quota for the GPU family of gpuVmSize.')
@minLength(1)
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person running azd (azd sets AZURE_PRINCIPAL_ID): roles for the tuneloop command. Empty = none.')
param principalId string = ''

@description('Principal type of principalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Base model in the azureml registry (TUNELOOP_BASE_MODEL). It must offer chat-completion fine-tuning and not be retired.')
@minLength(1)
param baseModel string = 'Phi-4'

@description('VM size of the fine-tuning cluster: one from the base model\'s fine-tune allow-list (Phi-4 spec, finetuneRecommendedSkus).')
@allowed([
  'Standard_NC24ads_A100_v4'
  'Standard_NC48ads_A100_v4'
  'Standard_NC96ads_A100_v4'
  'Standard_ND96asr_v4'
  'Standard_ND96amsr_A100_v4'
  'Standard_NC40ads_H100_v5'
  'Standard_NC80adis_H100_v5'
  'Standard_ND96isr_H100_v5'
])
param gpuVmSize string = 'Standard_NC24ads_A100_v4'

@description('Most nodes of the fine-tuning cluster (it has 0 when idle).')
@minValue(1)
@maxValue(100)
param gpuMaxNodes int = 1

@description('Instance type of online deployments (TUNELOOP_INFERENCE_INSTANCE_TYPE): one from the base model\'s inference allow-list (Phi-4 spec, inferenceRecommendedSkus).')
@allowed([
  'Standard_NC24ads_A100_v4'
  'Standard_NC48ads_A100_v4'
  'Standard_NC96ads_A100_v4'
  'Standard_ND96asr_v4'
  'Standard_ND96amsr_A100_v4'
  'Standard_ND96isr_H100_v5'
  'Standard_NC40ads_H100_v5'
  'Standard_NC80adis_H100_v5'
])
param inferenceVmSize string = 'Standard_NC24ads_A100_v4'

@description('How a smoke-tested deployment gets live traffic (TUNELOOP_PROMOTION): exam = it sits the line\'s exam beside the live model; gate = deprecated alias of exam.')
@allowed([
  'exam'
  'auto'
  'gate'
  'manual'
])
param promotion string = 'exam'

@description('What the idle-endpoint sweeper does (TUNELOOP_SWEEP_MODE).')
@allowed([
  'delete'
  'dry-run'
])
param sweepMode string = 'delete'

@description('ISO-8601 duration an endpoint must be idle before the sweeper deletes it (TUNELOOP_IDLE_AFTER).')
@minLength(3)
param idleAfter string = 'PT24H'

@description('Publish tuneloop\'s lifecycle events (CloudEvents) to an Event Grid topic (TUNELOOP_EVENTS_ENDPOINT), the app\'s identity holding EventGrid Data Sender on it; false = no topic, no events published.')
param lifecycleEvents bool = true

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var names = {
  resourceGroup: 'rg-${environmentName}'
  logAnalytics: 'log-${resourceToken}'
  appInsights: 'appi-${resourceToken}'
  dataAccount: 'stdata${resourceToken}'
  hostAccount: 'sthost${resourceToken}'
  mlStorage: 'stml${resourceToken}'
  keyVault: 'kv-${resourceToken}'
  workspace: 'mlw-${resourceToken}'
  identity: 'id-func-${resourceToken}'
  plan: 'plan-${resourceToken}'
  functionApp: 'func-${resourceToken}'
  dataTopic: 'evgt-data-${resourceToken}'
  workspaceTopic: 'evgt-mlw-${resourceToken}'
  lifecycleTopic: 'evgt-tl-${resourceToken}'
  deploymentContainer: 'app-package'
}

var containers = {
  incoming: 'incoming'
  reports: 'reports'
  rejected: 'rejected'
  prepared: 'prepared'
  deadLetter: 'deadletter'
}
var ledgerTable = 'tuneloopruns'
var computeName = 'tl-gpu'
var datastoreName = 'tuneloop'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    dataAccountName: names.dataAccount
    hostAccountName: names.hostAccount
    dataContainers: [
      containers.incoming
      containers.reports
      containers.rejected
      containers.prepared
      containers.deadLetter
    ]
    ledgerTable: ledgerTable
    deploymentContainer: names.deploymentContainer
  }
}

module ml 'modules/ml.bicep' = {
  name: 'ml'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: names.workspace
    keyVaultName: names.keyVault
    mlStorageName: names.mlStorage
    appInsightsId: monitoring.outputs.appInsightsId
    computeName: computeName
    computeVmSize: gpuVmSize
    computeMaxNodes: gpuMaxNodes
    datastoreName: datastoreName
    dataAccountName: storage.outputs.dataAccountName
    preparedContainer: containers.prepared
  }
}

// Every TUNELOOP_* app setting, in this one place. Exactly what shared/settings.py reads
// (tests/infra/test_app_settings.py compares them with the Settings model); the settings
// that only make sense on the local platform are left out.
var tuneloopSettings = {
  TUNELOOP_PLATFORM: 'azureml'
  TUNELOOP_STORAGE_ACCOUNT_URL: storage.outputs.dataBlobEndpoint
  TUNELOOP_INCOMING_CONTAINER: containers.incoming
  TUNELOOP_REPORTS_CONTAINER: containers.reports
  TUNELOOP_REJECTED_CONTAINER: containers.rejected
  TUNELOOP_PREPARED_CONTAINER: containers.prepared
  TUNELOOP_LEDGER_TABLE: ledgerTable
  // The lifecycle events topic (optional); '' = unset: no event is recorded or published.
  TUNELOOP_EVENTS_ENDPOINT: lifecycleEvents ? lifecycleTopic.outputs.endpoint : ''
  TUNELOOP_MAX_LINE_BYTES: '4194304'
  TUNELOOP_MIN_EXAMPLES: '10'
  TUNELOOP_MAX_SEQ_LENGTH: '4096'
  TUNELOOP_VALIDATION_FRACTION: '0.1'
  TUNELOOP_SUBSCRIPTION_ID: subscription().subscriptionId
  TUNELOOP_RESOURCE_GROUP: rg.name
  TUNELOOP_WORKSPACE_NAME: ml.outputs.workspaceName
  TUNELOOP_REGISTRY_NAME: 'azureml'
  TUNELOOP_COMPONENT_NAME: 'chat_completion_pipeline'
  TUNELOOP_BASE_MODEL: baseModel
  TUNELOOP_COMPUTE: ml.outputs.computeName
  TUNELOOP_DATASTORE: ml.outputs.datastoreName
  TUNELOOP_LINE_OVERRIDES: '{}'
  TUNELOOP_INFERENCE_INSTANCE_TYPE: inferenceVmSize
  TUNELOOP_INFERENCE_INSTANCE_COUNT: '1'
  TUNELOOP_PROMOTION: promotion
  TUNELOOP_GATE_METRIC: 'chrf'
  TUNELOOP_GATE_TOLERANCE: '0.0'
  TUNELOOP_EXAM_EXAMPLES: '50'
  TUNELOOP_EXAM_CONCURRENCY: '4'
  TUNELOOP_EXAM_CALL_TIMEOUT: '120'
  TUNELOOP_EXAM_MAX_NEW_TOKENS: '128'
  TUNELOOP_SMOKE_EXAMPLES: '2'
  TUNELOOP_RECONCILE_SCHEDULE: '0 */5 * * * *'
  TUNELOOP_SWEEP_SCHEDULE: '0 */30 * * * *'
  TUNELOOP_IDLE_AFTER: idleAfter
  TUNELOOP_IDLE_MAX_REQUESTS: '0'
  TUNELOOP_SWEEP_MAX_DELETIONS: '5'
  TUNELOOP_SWEEP_MODE: sweepMode
}

module functionApp 'modules/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    location: location
    tags: tags
    functionAppName: names.functionApp
    planName: names.plan
    identityName: names.identity
    hostAccountName: storage.outputs.hostAccountName
    deploymentContainer: names.deploymentContainer
    dataBlobEndpoint: storage.outputs.dataBlobEndpoint
    dataQueueEndpoint: storage.outputs.dataQueueEndpoint
    appInsightsName: monitoring.outputs.appInsightsName
    tuneloopSettings: tuneloopSettings
  }
}

module events 'modules/events.bicep' = {
  name: 'events'
  scope: rg
  params: {
    location: location
    tags: tags
    dataTopicName: names.dataTopic
    workspaceTopicName: names.workspaceTopic
    dataAccountId: storage.outputs.dataAccountId
    workspaceId: ml.outputs.workspaceId
  }
}

// tuneloop's own lifecycle events (optional): the topic, then the app's EventGrid Data Sender
// role on it (two modules: the role needs the app's identity, the app's settings the topic).
module lifecycleTopic 'modules/lifecycle-topic.bicep' = if (lifecycleEvents) {
  name: 'lifecycle-topic'
  scope: rg
  params: {
    location: location
    tags: tags
    topicName: names.lifecycleTopic
  }
}

module lifecycleTopicRole 'modules/lifecycle-topic-role.bicep' = if (lifecycleEvents) {
  name: 'lifecycle-topic-role'
  scope: rg
  params: {
    topicName: lifecycleTopic.outputs.topicName
    appPrincipalId: functionApp.outputs.identityPrincipalId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    dataAccountName: storage.outputs.dataAccountName
    hostAccountName: storage.outputs.hostAccountName
    appInsightsName: monitoring.outputs.appInsightsName
    workspaceName: ml.outputs.workspaceName
    appPrincipalId: functionApp.outputs.identityPrincipalId
    workspacePrincipalId: ml.outputs.workspacePrincipalId
    computePrincipalId: ml.outputs.computePrincipalId
    dataTopicPrincipalId: events.outputs.dataTopicPrincipalId
    workspaceTopicPrincipalId: events.outputs.workspaceTopicPrincipalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module subscriptionRoles 'modules/subscription-roles.bicep' = {
  name: 'subscription-roles-${resourceToken}'
  params: {
    appPrincipalId: functionApp.outputs.identityPrincipalId
  }
}

// What azd writes to .azure/<env>/.env: the hook reads these, and so can a terminal
// (`azd env get-values`) to point the tuneloop command at the deployment.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_SUBSCRIPTION_ID string = subscription().subscriptionId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.functionAppName
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = functionApp.outputs.identityClientId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.dataAccountName
output AZURE_DATA_TOPIC_NAME string = events.outputs.dataTopicName
output AZURE_WORKSPACE_TOPIC_NAME string = events.outputs.workspaceTopicName
output AZURE_LIFECYCLE_TOPIC_NAME string = lifecycleEvents ? names.lifecycleTopic : ''
output AZURE_ML_WORKSPACE_NAME string = ml.outputs.workspaceName
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output TUNELOOP_SUBSCRIPTION_ID string = subscription().subscriptionId
output TUNELOOP_RESOURCE_GROUP string = rg.name
output TUNELOOP_WORKSPACE_NAME string = ml.outputs.workspaceName
output TUNELOOP_STORAGE_ACCOUNT_URL string = storage.outputs.dataBlobEndpoint
output TUNELOOP_COMPUTE string = ml.outputs.computeName
output TUNELOOP_BASE_MODEL string = baseModel
output TUNELOOP_INFERENCE_INSTANCE_TYPE string = inferenceVmSize
output TUNELOOP_INCOMING_CONTAINER string = containers.incoming
output TUNELOOP_DEADLETTER_CONTAINER string = containers.deadLetter
