terraform {
  required_providers {
    azurerm = { source = "hashicorp/azurerm", version = "~> 3.0" }
  }
}

provider "azurerm" {
  features {}
}

variable "config_server_url" {
  description = "AAMI config server, reachable from the nodes (port 8080)"
  type        = string
}

variable "bootstrap_token" {
  description = "AAMI bootstrap token (max_uses >= node_count, with an expiry); stored in Key Vault, never in custom_data"
  type        = string
  sensitive   = true
}

variable "key_vault_name" {
  description = "A new Key Vault for the token (3-24 characters, unique in Azure)"
  type        = string
}

variable "node_count" {
  type    = number
  default = 10
}

variable "vm_size" {
  type    = string
  default = "Standard_NC24ads_A100_v4"
}

variable "location" {
  type    = string
  default = "koreacentral"
}

variable "subnet_id" {
  type = string
}

variable "prometheus_cidr" {
  type = string
}

variable "ssh_public_key" {
  type = string
}

resource "azurerm_resource_group" "main" {
  name     = "aami-gpu-nodes"
  location = var.location
}

resource "azurerm_network_security_group" "gpu_nodes" {
  name                = "aami-gpu-nodes"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name

  security_rule {
    name                       = "exporters-from-prometheus"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_address_prefix      = var.prometheus_cidr
    source_port_range          = "*"
    destination_address_prefix = "*"
    destination_port_ranges    = ["9100", "9400"]
  }
}

data "azurerm_client_config" "current" {}

# The token lives here, not in custom_data: a new token is a new version of this secret, and
# no VM is replaced. Trade-off: it is in the Terraform state (keep the state storage
# private), and every node of this module can read the current token, so give each token a
# short expiry and revoke it once its batch has registered.
resource "azurerm_key_vault" "aami" {
  name                = var.key_vault_name
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tenant_id           = data.azurerm_client_config.current.tenant_id
  sku_name            = "standard"
}

# Whoever runs Terraform writes the token; access policies are separate resources, as the
# provider requires when some are added per VM below.
resource "azurerm_key_vault_access_policy" "operator" {
  key_vault_id       = azurerm_key_vault.aami.id
  tenant_id          = data.azurerm_client_config.current.tenant_id
  object_id          = data.azurerm_client_config.current.object_id
  secret_permissions = ["Get", "Set", "Delete", "Purge", "Recover"]
}

resource "azurerm_key_vault_secret" "bootstrap_token" {
  name         = "aami-bootstrap-token"
  value        = var.bootstrap_token
  key_vault_id = azurerm_key_vault.aami.id
  depends_on   = [azurerm_key_vault_access_policy.operator]
}

# Each VM's managed identity may read secrets, and nothing else. It exists only once the VM
# does, so the start-up script retries until this is in place.
resource "azurerm_key_vault_access_policy" "gpu_node" {
  count              = var.node_count
  key_vault_id       = azurerm_key_vault.aami.id
  tenant_id          = data.azurerm_client_config.current.tenant_id
  object_id          = azurerm_linux_virtual_machine.gpu_node[count.index].identity[0].principal_id
  secret_permissions = ["Get"]
}

resource "azurerm_network_interface" "gpu_node" {
  count               = var.node_count
  name                = "ml-training-node-${count.index + 1}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name

  ip_configuration {
    name                          = "internal"
    subnet_id                     = var.subnet_id
    private_ip_address_allocation = "Dynamic"
  }
}

resource "azurerm_network_interface_security_group_association" "gpu_node" {
  count                     = var.node_count
  network_interface_id      = azurerm_network_interface.gpu_node[count.index].id
  network_security_group_id = azurerm_network_security_group.gpu_nodes.id
}

# The start-up script: it names where the token is, never the token.
module "startup" {
  source            = "../startup"
  cloud             = "azure"
  config_server_url = var.config_server_url
  instance_type     = var.vm_size
  fetch_token = templatefile("${path.module}/fetch-token.sh.tpl", {
    token_secret_url = azurerm_key_vault_secret.bootstrap_token.versionless_id
  })
}

resource "azurerm_linux_virtual_machine" "gpu_node" {
  count                 = var.node_count
  name                  = "ml-training-node-${count.index + 1}"
  resource_group_name   = azurerm_resource_group.main.name
  location              = azurerm_resource_group.main.location
  size                  = var.vm_size
  admin_username        = "azureuser"
  network_interface_ids = [azurerm_network_interface.gpu_node[count.index].id]

  admin_ssh_key {
    username   = "azureuser"
    public_key = var.ssh_public_key
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "0001-com-ubuntu-server-jammy"
    sku       = "22_04-lts-gen2"
    version   = "latest"
  }

  identity {
    type = "SystemAssigned"
  }

  # A shell script, which cloud-init runs at first boot. It names where the token is, never
  # the token: rotating it leaves this unchanged.
  custom_data = base64encode(module.startup.script)
}
