-- Argo CD health check for nico.dev/NicoTask.
-- Install it in argocd-cm as resource.customizations.health.nico.dev_NicoTask
-- (docs/gitops.md). Verdicts:
--   no status, Unknown, Pending, Waiting, Running -> Progressing
--   a CancelPending condition                      -> Progressing (its message)
--   Succeeded                                      -> Healthy
--   Terminated (cancelled, as its owner asked)     -> Healthy, with the message
--   Failed                                         -> Degraded
local hs = {}

local function condition(name)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == name and c.status == "True" then
      return c
    end
  end
  return nil
end

local function progress()
  local report = obj.status.report
  if report == nil or report.stages == nil then
    return ""
  end
  local total, done, current = 0, 0, nil
  for _, stage in ipairs(report.stages) do
    total = total + 1
    if stage.status == "completed" or stage.status == "skipped" then
      done = done + 1
    elseif stage.status == "running" and current == nil then
      current = stage.number
    end
  end
  if total == 0 then
    return ""
  end
  if current ~= nil then
    return " (stage " .. tostring(current) .. " of " .. tostring(total) .. ")"
  end
  return " (" .. tostring(done) .. " of " .. tostring(total) .. " stages done)"
end

if obj.status == nil or obj.status.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the nicotask operator to pick up the task"
  return hs
end

local s = obj.status.status
local msg = obj.status.message
if msg == nil or msg == "" then
  msg = s
end

if s == "Succeeded" then
  hs.status = "Healthy"
  hs.message = msg
  local ignored = condition("CancelIgnored")
  if ignored ~= nil then
    hs.message = msg .. "; " .. (ignored.message or "cancel ignored: the task had finished")
  end
  return hs
end
if s == "Terminated" then
  hs.status = "Healthy"
  hs.message = "Terminated: " .. msg
  return hs
end
if s == "Failed" then
  hs.status = "Degraded"
  hs.message = msg
  return hs
end

local pending = condition("CancelPending")
if pending ~= nil then
  hs.status = "Progressing"
  hs.message = "Cancel pending: " .. (pending.message or "waiting for Temporal to confirm")
  return hs
end

hs.status = "Progressing"
if s == "Waiting" then
  if string.find(string.lower(msg), "queue", 1, true) then
    hs.message = msg
  else
    hs.message = "Waiting in the rack queue: " .. msg
  end
elseif s == "Running" then
  hs.message = msg .. progress()
elseif s == "Pending" then
  hs.message = "Pending: " .. msg
else
  hs.message = s .. ": " .. msg
end
if obj.spec ~= nil and obj.spec.cancel == true then
  hs.message = hs.message .. " (cancel requested)"
end
return hs
