terraform {
  required_providers {
    azurerm = { source = "hashicorp/azurerm", version = "~> 3.0" }
  }
}

provider "azurerm" {
  features {}
}

variable "config_server_url" {
  type = string
}

variable "bootstrap_token" {
  type      = string
  sensitive = true
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

  custom_data = base64encode(templatefile("${path.module}/cloud-init.yaml.tpl", {
    config_server_url = var.config_server_url
    bootstrap_token   = var.bootstrap_token
    vm_size           = var.vm_size
  }))
}
