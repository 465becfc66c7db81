// Log Analytics + workspace-based Application Insights, shared by the Function App and the
// Azure ML workspace (a workspace needs an Application Insights component).
// API versions: Microsoft.OperationalInsights/workspaces@2023-09-01 and
// Microsoft.Insights/components@2020-02-02 (learn.microsoft.com/azure/templates/
// microsoft.operationalinsights/workspaces, .../microsoft.insights/components).

@description('Azure region of the monitoring resources.')
@minLength(1)
param location string

@description('Tags put on every resource.')
param tags object

@description('Name of the Log Analytics workspace (4-63 letters, digits and hyphens).')
@minLength(4)
@maxLength(63)
param logAnalyticsName string

@description('Name of the Application Insights component.')
@minLength(1)
@maxLength(260)
param appInsightsName string

@description('Days Log Analytics keeps data (30 is the free retention of the PerGB2018 tier).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    // Telemetry only with Entra ID: the app sends with its identity (Monitoring Metrics
    // Publisher, roles.bicep) and APPLICATIONINSIGHTS_AUTHENTICATION_STRING.
    DisableLocalAuth: true
  }
}

output appInsightsName string = appInsights.name
output appInsightsId string = appInsights.id
output connectionString string = appInsights.properties.ConnectionString
output logAnalyticsId string = logAnalytics.id
